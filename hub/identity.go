package hub

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"

	"ledge/hub/azure"
	"ledge/internal/fault"
)

// Identity kinds.
const (
	KindDevice = "device" // a leaf device with symmetric keys or X.509
	KindModule = "module" // a module <device>/<module>
	KindUser   = "user"   // a plain MQTT client with a username and password
)

// Identity is a client allowed to connect. Keys are base64; they are
// shown when created and by Show, never logged.
type Identity struct {
	Name         string `json:"name"` // device id, <device>/<module>, or user name
	Kind         string `json:"kind"`
	Device       string `json:"deviceId,omitempty"`
	Module       string `json:"moduleId,omitempty"`
	PrimaryKey   string `json:"primaryKey,omitempty"`
	SecondaryKey string `json:"secondaryKey,omitempty"`
	Thumbprint   string `json:"x509Thumbprint,omitempty"` // hex SHA-256 (or SHA-1) of a client certificate
	X509CA       bool   `json:"x509CA,omitempty"`         // any certificate from a trusted CA with CN = the device id
	Enabled      bool   `json:"enabled"`
	ManagedBy    string `json:"managedBy,omitempty"` // "agent" for module identities the agent owns
	// Parent is the edge device behind which this device sits (IoT Hub's
	// parent scope): that device may connect on its behalf (a child
	// ledge relays its methods, C2D and twins).
	Parent  string    `json:"parent,omitempty"`
	Created time.Time `json:"created"`

	passwordHash []byte
	primary      []byte // decoded keys
	secondary    []byte
}

// Public returns the identity without secrets.
func (id Identity) Public() Identity {
	id.PrimaryKey, id.SecondaryKey = "", ""
	id.passwordHash, id.primary, id.secondary = nil, nil, nil
	return id
}

// IdentitySpec asks for a new identity.
type IdentitySpec struct {
	Name       string `json:"name"`                     // "dev1", "dev1/mod1", or a user name with Kind user
	Kind       string `json:"kind,omitempty"`           // default device (module when Name has a /)
	Password   string `json:"password,omitempty"`       // user: the password (generated when empty)
	Thumbprint string `json:"x509Thumbprint,omitempty"` // device: X.509 by thumbprint instead of keys
	X509CA     bool   `json:"x509CA,omitempty"`         // device: X.509 signed by a trusted CA
	ManagedBy  string `json:"managedBy,omitempty"`
	// Parent (devices): the edge device that may connect on its behalf.
	Parent string `json:"parent,omitempty"`
}

// Created is what Add returns: the identity with its secrets, shown once.
type Created struct {
	Identity
	Password         string `json:"password,omitempty"`
	ConnectionString string `json:"connectionString,omitempty"`
}

var namePart = regexp.MustCompile(`^[A-Za-z0-9\-.:_%*?!(),=@;$']{1,128}$`)

// identities is the in-memory copy of hub_identities; reads are lock-free
// through a copy-on-write map.
type identities struct {
	db *sql.DB
	mu sync.Mutex // serialises writers
	m  sync.Map   // name (lower case) -> *Identity
	// passwords caches successful bcrypt checks: sha256(name\0password).
	passwords sync.Map
}

func loadIdentities(ctx context.Context, db *sql.DB) (*identities, error) {
	s := &identities{db: db}
	rows, err := db.QueryContext(ctx, `SELECT name, kind, device, module, primary_key, secondary_key, password_hash,
		thumbprint, x509_ca, enabled, managed_by, created, parent FROM hub_identities`)
	if err != nil {
		return nil, fmt.Errorf("load identities: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id Identity
		var created string
		if err := rows.Scan(&id.Name, &id.Kind, &id.Device, &id.Module, &id.PrimaryKey, &id.SecondaryKey, &id.passwordHash,
			&id.Thumbprint, &id.X509CA, &id.Enabled, &id.ManagedBy, &created, &id.Parent); err != nil {
			return nil, fmt.Errorf("load identities: %w", err)
		}
		id.Created, _ = time.Parse(time.RFC3339, created)
		id.decode()
		s.m.Store(strings.ToLower(id.Name), &id)
	}
	return s, rows.Err()
}

func (id *Identity) decode() {
	id.primary, _ = base64.StdEncoding.DecodeString(id.PrimaryKey)
	id.secondary, _ = base64.StdEncoding.DecodeString(id.SecondaryKey)
}

func (s *identities) get(name string) *Identity {
	v, ok := s.m.Load(strings.ToLower(name))
	if !ok {
		return nil
	}
	return v.(*Identity)
}

func (s *identities) list() []Identity {
	out := []Identity{}
	s.m.Range(func(_, v any) bool {
		out = append(out, v.(*Identity).Public())
		return true
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func newKey() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

func newPassword() string {
	b := make([]byte, 18)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// validate fills kind, device and module from the spec.
func (spec *IdentitySpec) validate() (Identity, error) {
	id := Identity{Name: spec.Name, Kind: spec.Kind, Enabled: true, ManagedBy: spec.ManagedBy, Created: time.Now().UTC().Truncate(time.Second)}
	if id.Kind == "" {
		id.Kind = KindDevice
		if strings.Contains(spec.Name, "/") {
			id.Kind = KindModule
		}
	}
	switch id.Kind {
	case KindDevice:
		if !namePart.MatchString(spec.Name) {
			return id, fault.New(fault.Invalid, "identity name %q: want 1-128 letters, digits or -.:_%%*?!(),=@;$' (no /, #, + or spaces)", spec.Name)
		}
		id.Device = spec.Name
	case KindModule:
		d, m, ok := strings.Cut(spec.Name, "/")
		if !ok || !namePart.MatchString(d) || !namePart.MatchString(m) || strings.Contains(m, "/") {
			return id, fault.New(fault.Invalid, "module identity %q: want <device>/<module>, each 1-128 letters, digits or -.:_", spec.Name)
		}
		id.Device, id.Module = d, m
	case KindUser:
		if !namePart.MatchString(spec.Name) {
			return id, fault.New(fault.Invalid, "user name %q: want 1-128 letters, digits or -.:_ (no /, #, + or spaces)", spec.Name)
		}
	default:
		return id, fault.New(fault.Invalid, "identity kind %q: want device, module or user", spec.Kind)
	}
	if spec.Password != "" && id.Kind != KindUser {
		return id, fault.New(fault.Invalid, "password: only user identities have passwords (module and device identities use keys)")
	}
	if (spec.Thumbprint != "" || spec.X509CA) && id.Kind != KindDevice {
		return id, fault.New(fault.Invalid, "x509: only device identities use client certificates")
	}
	if spec.Thumbprint != "" {
		tp := strings.ToLower(strings.ReplaceAll(spec.Thumbprint, ":", ""))
		if b, err := hex.DecodeString(tp); err != nil || (len(b) != 32 && len(b) != 20) {
			return id, fault.New(fault.Invalid, "x509Thumbprint %q: want the hex SHA-256 (or SHA-1) of the certificate", spec.Thumbprint)
		}
		id.Thumbprint = tp
	}
	id.X509CA = spec.X509CA
	if spec.Parent != "" {
		if id.Kind != KindDevice {
			return id, fault.New(fault.Invalid, "parent: only devices have a parent (an edge device that connects on their behalf)")
		}
		if !namePart.MatchString(spec.Parent) || strings.EqualFold(spec.Parent, spec.Name) {
			return id, fault.New(fault.Invalid, "parent %q: want another device's id", spec.Parent)
		}
		id.Parent = spec.Parent
	}
	return id, nil
}

// add creates an identity; it is a conflict if the name exists.
func (s *identities) add(ctx context.Context, spec IdentitySpec) (Created, error) {
	id, err := spec.validate()
	if err != nil {
		return Created{}, err
	}
	var out Created
	switch {
	case id.Kind == KindUser:
		out.Password = spec.Password
		if out.Password == "" {
			out.Password = newPassword()
		}
		id.passwordHash, err = bcrypt.GenerateFromPassword([]byte(out.Password), bcrypt.DefaultCost)
		if err != nil {
			return Created{}, fmt.Errorf("hash password: %w", err)
		}
	case id.Thumbprint == "" && !id.X509CA:
		id.PrimaryKey, id.SecondaryKey = newKey(), newKey()
		id.decode()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.get(id.Name) != nil {
		return Created{}, fault.New(fault.Conflict, "identity %q exists", id.Name)
	}
	if id.Parent != "" {
		p := s.get(id.Parent)
		if p == nil || p.Kind != KindDevice {
			return Created{}, fault.New(fault.Invalid, "parent %q is not a device identity on this hub", id.Parent)
		}
		id.Parent = p.Name
	}
	_, err = s.db.ExecContext(ctx, `INSERT INTO hub_identities (name, kind, device, module, primary_key, secondary_key,
		password_hash, thumbprint, x509_ca, enabled, managed_by, created, parent) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)`,
		id.Name, id.Kind, id.Device, id.Module, id.PrimaryKey, id.SecondaryKey, id.passwordHash, id.Thumbprint, id.X509CA,
		id.Enabled, id.ManagedBy, id.Created.Format(time.RFC3339), id.Parent)
	if err != nil {
		return Created{}, fmt.Errorf("add identity %q: %w", id.Name, err)
	}
	s.m.Store(strings.ToLower(id.Name), &id)
	out.Identity = id
	return out, nil
}

func (s *identities) remove(ctx context.Context, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := s.get(name)
	if id == nil {
		return fault.New(fault.NotFound, "identity %q does not exist", name)
	}
	if _, err := s.db.ExecContext(ctx, `DELETE FROM hub_identities WHERE name = ?`, id.Name); err != nil {
		return fmt.Errorf("remove identity %q: %w", name, err)
	}
	s.m.Delete(strings.ToLower(name))
	s.passwords.Range(func(k, _ any) bool { s.passwords.Delete(k); return true })
	return nil
}

// passwordKey is the cache key of a user's password.
func passwordKey(id *Identity, password []byte) string {
	h := sha256.New()
	h.Write([]byte(id.Name))
	h.Write([]byte{0})
	h.Write(password)
	h.Write(id.passwordHash)
	return string(h.Sum(nil))
}

// passwordCached reports whether password is one checkPassword found
// right before (no bcrypt).
func (s *identities) passwordCached(id *Identity, password []byte) bool {
	if len(id.passwordHash) == 0 {
		return false
	}
	_, ok := s.passwords.Load(passwordKey(id, password))
	return ok
}

// checkPassword verifies a user's password, caching successes so a
// reconnecting client does not pay bcrypt again.
func (s *identities) checkPassword(id *Identity, password []byte) bool {
	if len(id.passwordHash) == 0 {
		return false
	}
	key := passwordKey(id, password)
	if _, ok := s.passwords.Load(key); ok {
		return true
	}
	if bcrypt.CompareHashAndPassword(id.passwordHash, password) != nil {
		return false
	}
	s.passwords.Store(key, struct{}{})
	return true
}

// modulePassword is the plain MQTT password of a module identity: derived
// from its primary key, so the agent can hand it out again without the hub
// storing it.
func modulePassword(id *Identity) string {
	if len(id.primary) == 0 {
		return ""
	}
	return base64.RawURLEncoding.EncodeToString(azure.Sign(id.primary, "ledge-mqtt-password", id.Name))
}

// connectionString is the Azure-style connection string of a key identity.
func connectionString(host, gateway string, id *Identity) string {
	if id.PrimaryKey == "" {
		return ""
	}
	cs := "HostName=" + host + ";DeviceId=" + id.Device
	if id.Module != "" {
		cs += ";ModuleId=" + id.Module
	}
	cs += ";SharedAccessKey=" + id.PrimaryKey
	if gateway != "" {
		cs += ";GatewayHostName=" + gateway
	}
	return cs
}
