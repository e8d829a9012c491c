// Package top is the view of `ctdoctor top`: a live terminal screen
// (bubbletea) over a [watch.Source], and the plain one-frame output of
// `ctdoctor top --once` for scripts and tests.
//
// The screen shows, for one watched namespace at a time: the verdict of
// the last full diagnosis, a usage gauge, the counter rates (new entries,
// drops, early drops, insert failures) and the estimated time until the
// table is full, sparklines of usage and drops over the session, the
// breakdown tables (TCP state, protocol, top services, sources and
// destinations) with each row's change since the previous refresh, the
// kernel log's table-full events as they arrive, and the findings, whose
// fixes open on a key press.
//
// [Model] is a bubbletea model: its Update and View can be driven without
// a terminal. [Render] draws one frame as text at a given size; [Run] runs
// the screen; [Once] waits for the first complete frames and prints them.
package top
