package dashboard

import (
	"context"
	"slices"
	"time"

	"k8s.io/utils/clock"

	"github.com/meshid/meshid/cmd/internal/cli"
	"github.com/meshid/meshid/cmd/meshid/internal/anchor"
	rotator "github.com/meshid/meshid/rotation/anchor"
)

// rotationView is the fleet page's rotation section: the rotation stored
// in the cluster, stage by stage, with the convergence counts of `meshid
// rotate-anchor status` (rotation/anchor's Status, the same call).
type rotationView struct {
	// Problem says why the rotation could not be read; "" when it was.
	Problem string
	// Status is what rotate-anchor status reports; its State is nil when
	// no rotation was ever started.
	Status *rotator.Status
	// Steps are the plan's stages, each with where the rotation is.
	Steps []rotationStep
}

// rotationStep is one stage of the plan (rotate-anchor plan's words).
type rotationStep struct {
	anchor.Step
	// Progress is "done", "current" or "pending".
	Progress string
	// Took is how long a finished stage took.
	Took string
}

// rotation reads the rotation as rotate-anchor status does.
func (s *server) rotation(ctx context.Context) rotationView {
	r, err := rotator.New(rotator.Config{Client: s.c.Kube, Namespace: s.o.Check.Namespace, Clock: nowClock{p: s.clock}})
	if err != nil {
		return rotationView{Problem: err.Error()}
	}
	st, err := r.Status(ctx)
	if err != nil {
		return rotationView{Problem: cli.Message(err) + " (the dashboard reads what meshid rotate-anchor status reads, with your RBAC)"}
	}
	return rotationViewOf(st)
}

// rotationViewOf places st on the plan's stages.
func rotationViewOf(st *rotator.Status) rotationView {
	v := rotationView{Status: st}
	if st.State == nil {
		return v
	}
	at := slices.Index(rotator.Stages, st.State.Stage)
	for i, step := range anchor.Steps() {
		rs := rotationStep{Step: step, Progress: "pending", Took: st.State.Timings[step.Stage]}
		switch {
		case rs.Took != "" || (at >= 0 && i < at) || st.State.Stage == rotator.Done:
			rs.Progress = "done"
		case step.Stage == st.State.Stage:
			rs.Progress = "current"
		}
		v.Steps = append(v.Steps, rs)
	}
	return v
}

// nowClock is the clock.Clock rotation/anchor's Config takes, telling the
// dashboard's time: Status only reads Now (to tell a stuck rotation).
type nowClock struct {
	clock.RealClock
	p clock.PassiveClock
}

func (c nowClock) Now() time.Time                  { return c.p.Now() }
func (c nowClock) Since(t time.Time) time.Duration { return c.p.Since(t) }
