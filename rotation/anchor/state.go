package anchor

import (
	"encoding/json"
	"fmt"
	"time"
)

// Stage of a rotation.
type Stage string

const (
	Add          Stage = "Add"
	SwitchIssuer Stage = "SwitchIssuer"
	Reissue      Stage = "Reissue"
	Remove       Stage = "Remove"
	Done         Stage = "Done"
	Aborted      Stage = "Aborted"
)

// Stages are the forward stages, in order.
var Stages = []Stage{Add, SwitchIssuer, Reissue, Remove, Done}

// Finished reports whether nothing more is to be done.
func (s Stage) Finished() bool { return s == Done || s == Aborted }

// State is a rotation as stored in the cluster (no keys: those are in the
// Secret).
type State struct {
	Stage       Stage     `json:"stage"`
	Aborting    bool      `json:"aborting,omitempty"`
	Emergency   bool      `json:"emergency,omitempty"`
	CertManager bool      `json:"certManager,omitempty"`
	Started     time.Time `json:"started"`
	// OldBundle is the bundle before the rotation; NewAnchor the anchor
	// that replaces it (PEM).
	OldBundle string `json:"oldBundle"`
	NewAnchor string `json:"newAnchor"`
	// NewIssuerSHA256 is the issuer from the new anchor, once issued.
	NewIssuerSHA256 string `json:"newIssuerSHA256,omitempty"`
	// ReissueWindow spreads the renewals of stage Reissue.
	ReissueWindow time.Duration `json:"reissueWindow"`
	// StageStarted is when the current stage began; Timings what each
	// finished stage took.
	StageStarted time.Time        `json:"stageStarted"`
	Timings      map[Stage]string `json:"timings,omitempty"`
	// Message says what the rotation is waiting for, or why it stopped.
	Message string `json:"message,omitempty"`
	// Wait is what the last run was waiting for, as it recorded it; nil
	// when it waited for nothing in this stage.
	Wait *StoredWait `json:"wait,omitempty"`
	// Failed is why the last run stopped, when it failed (an interrupted
	// run is not a failure); nil when it did not. A new run clears it.
	Failed *StoredFailure `json:"failed,omitempty"`
}

// StoredWait is a wait as the state records it: the goal, since when, and
// when the run gives up on it (its stage timeout).
type StoredWait struct {
	Goal     string    `json:"goal"`
	Since    time.Time `json:"since"`
	Deadline time.Time `json:"deadline"`
}

// StoredFailure is how a run failed, and when.
type StoredFailure struct {
	Reason Reason    `json:"reason"`
	Detail string    `json:"detail"`
	At     time.Time `json:"at"`
}

func (s *State) marshal() (string, error) {
	b, err := json.MarshalIndent(s, "", "  ")
	return string(b), err
}

func unmarshalState(data string) (*State, error) {
	var s State
	if err := json.Unmarshal([]byte(data), &s); err != nil {
		return nil, fmt.Errorf("anchor: the stored rotation state does not parse: %w", err)
	}
	return &s, nil
}

// advance records how long the current stage took and moves to next.
func (s *State) advance(now time.Time, next Stage) {
	if s.Timings == nil {
		s.Timings = map[Stage]string{}
	}
	s.Timings[s.Stage] = now.Sub(s.StageStarted).Round(time.Millisecond).String()
	s.Stage, s.StageStarted, s.Message, s.Wait = next, now, "", nil
}
