package pipeline

import (
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/false-systems/alumiini/crd/v1alpha1"
)

// setCondition sets a condition, keeping its transition time when its
// status did not change, so an unchanged sync produces an equal status and
// no write.
func setCondition(st *v1alpha1.GitRepositoryStatus, typ string, status bool, reason, msg string, gen int64) {
	s := metav1.ConditionFalse
	if status {
		s = metav1.ConditionTrue
	}
	meta.SetStatusCondition(&st.Conditions, metav1.Condition{
		Type: typ, Status: s, Reason: reason, Message: msg, ObservedGeneration: gen, LastTransitionTime: metaNow(),
	})
}

func removeCondition(st *v1alpha1.GitRepositoryStatus, typ string) {
	meta.RemoveStatusCondition(&st.Conditions, typ)
}

// metaNow is the current time at the API's one-second precision, so the
// value written equals the value read back.
func metaNow() metav1.Time { return metav1.Now().Rfc3339Copy() }
