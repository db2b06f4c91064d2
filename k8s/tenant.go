package k8s

import (
	"container/list"
	"fmt"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
)

// maxTenantClients bounds the impersonating clients kept at once: a client
// is cheap to rebuild (they share the controller's TLS transport and rate
// limiter), so a controller with more ServiceAccounts than this only pays
// a rebuild now and then.
const maxTenantClients = 512

// tenantClients builds and keeps one dynamic client per ServiceAccount,
// each impersonating system:serviceaccount:<namespace>:<name>, the least
// recently used dropped beyond maxTenantClients.
type tenantClients struct {
	base *rest.Config // the controller's own, with its shared rate limiter
	max  int

	mu      sync.Mutex
	order   *list.List // of *tenantClient, most recently used first
	clients map[string]*list.Element
}

type tenantClient struct {
	user   string
	client dynamic.Interface
	meta   metadata.Interface // for lists that need names, labels and versions only
}

func newTenantClients(base *rest.Config, max int) *tenantClients {
	return &tenantClients{base: base, max: max, order: list.New(), clients: map[string]*list.Element{}}
}

// serviceAccountUser is the user name a ServiceAccount authenticates as.
func serviceAccountUser(namespace, name string) string {
	return "system:serviceaccount:" + namespace + ":" + name
}

// get returns the clients impersonating ServiceAccount namespace/name.
func (t *tenantClients) get(namespace, name string) (*tenantClient, error) {
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return nil, fmt.Errorf("spec.serviceAccountName %q is not a valid ServiceAccount name: %v", name, errs)
	}
	user := serviceAccountUser(namespace, name)
	t.mu.Lock()
	defer t.mu.Unlock()
	if e, ok := t.clients[user]; ok {
		t.order.MoveToFront(e)
		return e.Value.(*tenantClient), nil
	}
	cfg := rest.CopyConfig(t.base)
	// The API server adds the groups system:serviceaccounts and
	// system:serviceaccounts:<namespace> itself, as for a real token.
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user}
	httpClient, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("HTTP client impersonating %s: %w", user, err)
	}
	client, err := dynamic.NewForConfigAndClient(cfg, httpClient)
	if err != nil {
		return nil, fmt.Errorf("client impersonating %s: %w", user, err)
	}
	meta, err := metadata.NewForConfigAndClient(cfg, httpClient)
	if err != nil {
		return nil, fmt.Errorf("metadata client impersonating %s: %w", user, err)
	}
	c := &tenantClient{user: user, client: client, meta: meta}
	t.clients[user] = t.order.PushFront(c)
	for t.order.Len() > t.max {
		last := t.order.Back()
		t.order.Remove(last)
		delete(t.clients, last.Value.(*tenantClient).user)
	}
	return c, nil
}

// serviceAccount is the ServiceAccount a sync with opts impersonates: the
// GitRepository's own, else the controller's default, else none ("").
func (a *Applier) serviceAccount(opts Options) string {
	if opts.ServiceAccount != "" {
		return opts.ServiceAccount
	}
	return a.defaultServiceAccount
}

// as returns a copy of a whose reads and writes of applied objects go
// through the client of the ServiceAccount of opts, when there is one. The
// copy shares the REST mapper: API discovery is the controller's own.
func (a *Applier) as(opts Options) (*Applier, error) {
	sa := a.serviceAccount(opts)
	if sa == "" {
		return a, nil
	}
	c, err := a.tenants.get(opts.Owner.Namespace, sa)
	if err != nil {
		return nil, err
	}
	b := *a
	b.client, b.meta = c.client, c.meta
	b.user = c.user
	return &b, nil
}

// explain adds to a refusal of the impersonated ServiceAccount what to do
// about it. The API server's message already names the verb, the resource
// and the namespace that the ServiceAccount lacks.
func (a *Applier) explain(err error) error {
	if a.user == "" || !apierrors.IsForbidden(err) {
		return err
	}
	return fmt.Errorf("%w (the GitRepository acts as %s: grant it this permission with a Role, "+
		"or remove the object from git)", err, a.user)
}
