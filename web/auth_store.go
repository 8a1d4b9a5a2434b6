package web

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"

	"ledge/internal/fault"
	"ledge/internal/migrate"
)

// authMigrations are web's tables: the admin password, browser sessions
// and API tokens. Secrets are stored hashed: the password with bcrypt,
// session ids and tokens (high-entropy random strings) with SHA-256.
var authMigrations = []string{
	`CREATE TABLE web_admin (
		id            INTEGER PRIMARY KEY CHECK (id = 1),
		password_hash TEXT NOT NULL,
		updated_at    TEXT NOT NULL
	);
	CREATE TABLE web_sessions (
		id_hash    TEXT PRIMARY KEY,
		csrf       TEXT NOT NULL,
		created_at INTEGER NOT NULL,
		expires_at INTEGER NOT NULL,
		remote     TEXT NOT NULL
	);
	CREATE TABLE web_tokens (
		name         TEXT PRIMARY KEY,
		hash         TEXT NOT NULL UNIQUE,
		created_at   TEXT NOT NULL,
		last_used_at TEXT
	)`,
}

// Session lifetimes.
const (
	sessionIdle    = 24 * time.Hour
	sessionMaxLife = 7 * 24 * time.Hour
	minPassword    = 10
)

// authStore keeps web's secrets in SQLite. Safe for concurrent use.
type authStore struct {
	db *sql.DB
}

// openAuthStore applies web's migrations.
func openAuthStore(ctx context.Context, db *sql.DB) (*authStore, error) {
	if err := migrate.Apply(ctx, db, "web", authMigrations); err != nil {
		return nil, err
	}
	return &authStore{db: db}, nil
}

func randomString(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("web: no randomness: " + err.Error())
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func hashSecret(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// SetAdminPassword sets the dashboard's admin password (at least 10
// characters) and ends every browser session.
func SetAdminPassword(ctx context.Context, db *sql.DB, password string) error {
	st, err := openAuthStore(ctx, db)
	if err != nil {
		return err
	}
	return st.setPassword(ctx, password)
}

func (st *authStore) setPassword(ctx context.Context, password string) error {
	if len(password) < minPassword {
		return fault.New(fault.Invalid, "password too short: want at least %d characters", minPassword)
	}
	if len(password) > 72 {
		return fault.New(fault.Invalid, "password too long: at most 72 bytes")
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	if err != nil {
		return fmt.Errorf("hash password: %w", err)
	}
	tx, err := st.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `INSERT INTO web_admin (id, password_hash, updated_at) VALUES (1, ?, ?)
		ON CONFLICT (id) DO UPDATE SET password_hash = excluded.password_hash, updated_at = excluded.updated_at`,
		string(hash), time.Now().UTC().Format(time.RFC3339)); err != nil {
		return fmt.Errorf("store password: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM web_sessions`); err != nil {
		return fmt.Errorf("end sessions: %w", err)
	}
	return tx.Commit()
}

// EnsureAdminPassword makes a random admin password when none is set:
// it hands it to keep first (which shows or stores it; an error leaves
// no password set) and returns it; "" when one was set already. Call it
// once the server's listeners are bound, so a start that fails makes
// none.
func EnsureAdminPassword(ctx context.Context, db *sql.DB, keep func(password string) error) (string, error) {
	st, err := openAuthStore(ctx, db)
	if err != nil {
		return "", err
	}
	var n int
	if err := st.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM web_admin`).Scan(&n); err != nil {
		return "", fmt.Errorf("read admin password: %w", err)
	}
	if n > 0 {
		return "", nil
	}
	pw := strings.ReplaceAll(randomString(15), "_", "x")
	if err := keep(pw); err != nil {
		return "", err
	}
	if err := st.setPassword(ctx, pw); err != nil {
		return "", err
	}
	return pw, nil
}

// checkPassword reports whether password is the admin password.
func (st *authStore) checkPassword(ctx context.Context, password string) (bool, error) {
	var hash string
	err := st.db.QueryRowContext(ctx, `SELECT password_hash FROM web_admin WHERE id = 1`).Scan(&hash)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read admin password: %w", err)
	}
	return bcrypt.CompareHashAndPassword([]byte(hash), []byte(password)) == nil, nil
}

// session is a logged-in browser.
type session struct {
	csrf    string
	expires time.Time
}

// newSession creates a session and returns its id (the cookie value).
func (st *authStore) newSession(ctx context.Context, remote string) (id, csrf string, err error) {
	id, csrf = randomString(32), randomString(24)
	now := time.Now()
	_, err = st.db.ExecContext(ctx, `INSERT INTO web_sessions (id_hash, csrf, created_at, expires_at, remote) VALUES (?, ?, ?, ?, ?)`,
		hashSecret(id), csrf, now.Unix(), now.Add(sessionIdle).Unix(), remote)
	if err != nil {
		return "", "", fmt.Errorf("create session: %w", err)
	}
	// Forget expired sessions while we are here.
	st.db.ExecContext(ctx, `DELETE FROM web_sessions WHERE expires_at < ? OR created_at < ?`,
		now.Unix(), now.Add(-sessionMaxLife).Unix())
	return id, csrf, nil
}

// lookupSession returns the live session with id and extends it.
func (st *authStore) lookupSession(ctx context.Context, id string) (*session, error) {
	if id == "" {
		return nil, nil
	}
	now := time.Now()
	var csrf string
	var created, expires int64
	err := st.db.QueryRowContext(ctx, `SELECT csrf, created_at, expires_at FROM web_sessions WHERE id_hash = ?`,
		hashSecret(id)).Scan(&csrf, &created, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read session: %w", err)
	}
	if now.Unix() > expires || now.Sub(time.Unix(created, 0)) > sessionMaxLife {
		return nil, nil
	}
	next := now.Add(sessionIdle)
	if next.Unix()-expires > 60 { // extend at most once a minute
		st.db.ExecContext(ctx, `UPDATE web_sessions SET expires_at = ? WHERE id_hash = ?`, next.Unix(), hashSecret(id))
	}
	return &session{csrf: csrf, expires: next}, nil
}

func (st *authStore) endSession(ctx context.Context, id string) error {
	_, err := st.db.ExecContext(ctx, `DELETE FROM web_sessions WHERE id_hash = ?`, hashSecret(id))
	return err
}

// TokenInfo describes an API token (never the token itself).
type TokenInfo struct {
	Name       string `json:"name"`
	CreatedAt  string `json:"createdAt"`
	LastUsedAt string `json:"lastUsedAt,omitempty"`
}

// CreateToken makes an API token for automation (Authorization: Bearer)
// and returns it; it is not stored, only its hash, so it is shown once.
func CreateToken(ctx context.Context, db *sql.DB, name string) (string, error) {
	st, err := openAuthStore(ctx, db)
	if err != nil {
		return "", err
	}
	return st.createToken(ctx, name)
}

func (st *authStore) createToken(ctx context.Context, name string) (string, error) {
	if name == "" || len(name) > 64 || strings.ContainsAny(name, " \t\n/") {
		return "", fault.New(fault.Invalid, "token name %q: want 1-64 characters without spaces or '/'", name)
	}
	tok := "ldg_" + randomString(30)
	_, err := st.db.ExecContext(ctx, `INSERT INTO web_tokens (name, hash, created_at) VALUES (?, ?, ?)`,
		name, hashSecret(tok), time.Now().UTC().Format(time.RFC3339))
	if err != nil {
		if strings.Contains(err.Error(), "UNIQUE") {
			return "", fault.New(fault.Conflict, "a token named %q exists already", name)
		}
		return "", fmt.Errorf("store token: %w", err)
	}
	return tok, nil
}

// ListTokens lists API tokens by name.
func ListTokens(ctx context.Context, db *sql.DB) ([]TokenInfo, error) {
	st, err := openAuthStore(ctx, db)
	if err != nil {
		return nil, err
	}
	return st.listTokens(ctx)
}

func (st *authStore) listTokens(ctx context.Context) ([]TokenInfo, error) {
	rows, err := st.db.QueryContext(ctx, `SELECT name, created_at, COALESCE(last_used_at, '') FROM web_tokens ORDER BY name`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []TokenInfo{}
	for rows.Next() {
		var t TokenInfo
		if err := rows.Scan(&t.Name, &t.CreatedAt, &t.LastUsedAt); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// RevokeToken deletes the API token called name.
func RevokeToken(ctx context.Context, db *sql.DB, name string) error {
	st, err := openAuthStore(ctx, db)
	if err != nil {
		return err
	}
	return st.revokeToken(ctx, name)
}

func (st *authStore) revokeToken(ctx context.Context, name string) error {
	res, err := st.db.ExecContext(ctx, `DELETE FROM web_tokens WHERE name = ?`, name)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fault.New(fault.NotFound, "no token named %q", name)
	}
	return nil
}

// checkToken reports whether tok is a valid API token.
func (st *authStore) checkToken(ctx context.Context, tok string) (bool, error) {
	if !strings.HasPrefix(tok, "ldg_") {
		return false, nil
	}
	h := hashSecret(tok)
	var stored string
	err := st.db.QueryRowContext(ctx, `SELECT hash FROM web_tokens WHERE hash = ?`, h).Scan(&stored)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if subtle.ConstantTimeCompare([]byte(stored), []byte(h)) != 1 {
		return false, nil
	}
	st.db.ExecContext(ctx, `UPDATE web_tokens SET last_used_at = ? WHERE hash = ?`, time.Now().UTC().Format(time.RFC3339), h)
	return true, nil
}
