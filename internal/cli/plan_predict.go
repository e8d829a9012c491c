package cli

import (
	"context"

	"github.com/ctdoctor/ctdoctor/doctor"
	"github.com/ctdoctor/ctdoctor/sim"
	"github.com/ctdoctor/ctdoctor/tune"
)

// predict runs the plan on the simulator: the workload derived from the
// diagnosed table, with the current and with the planned settings.
func predict(ctx context.Context, res *doctor.Result, p *tune.Plan) error {
	sc, err := sim.Derive(res.Snapshot, res.Report, res.Breakdown)
	if err != nil {
		return err
	}
	// The derived scenario lasts long enough for both runs to settle.
	pr, err := tune.Predict(ctx, p, sc, 0)
	if err != nil {
		return err
	}
	p.Prediction = pr
	return nil
}
