// Package render prints reports for people and for scripts: an aligned,
// optionally coloured terminal report that leads with the verdict, and JSON.
package render
