package web

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"ledge/internal/fault"
)

type loginRequest struct {
	Password string `json:"password"`
}

// login checks the admin password and starts a session: JSON at
// POST /api/v1/auth/login, or the form of the login page at POST /login
// (application/x-www-form-urlencoded; multipart is refused before a byte
// of it is read). The body is capped (limitBody), and the attempt is
// reserved with the limiter before the password is checked.
func (s *Server) login(c *gin.Context) {
	ct := c.ContentType()
	form := ct != "application/json"
	if form && ct != "application/x-www-form-urlencoded" {
		c.Header("Connection", "close")
		writeError(c, http.StatusUnsupportedMediaType, string(fault.Invalid),
			"log in with a form (application/x-www-form-urlencoded) or JSON ({\"password\": \"...\"}), not "+strconv.Quote(ct))
		return
	}
	var req loginRequest
	if form {
		if err := c.Request.ParseForm(); err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				writeError(c, http.StatusRequestEntityTooLarge, string(fault.TooLarge), fmt.Sprintf("request body over %d bytes", tooBig.Limit))
				return
			}
			writeError(c, http.StatusBadRequest, string(fault.Invalid), "malformed form: "+err.Error())
			return
		}
		req.Password = c.Request.PostForm.Get("password")
	} else if !bindJSON(c, &req) {
		return
	}
	if s.auth == nil {
		writeError(c, http.StatusServiceUnavailable, string(fault.Unavailable), "login is not configured")
		return
	}
	if !sameOrigin(c.Request) {
		writeError(c, http.StatusForbidden, string(fault.Forbidden), "cross-site request refused")
		return
	}
	client := clientAddr(c.Request)
	key := limitKey(client)
	tooMany := func(wait time.Duration, global bool) {
		secs := int(math.Ceil(wait.Seconds()))
		c.Header("Retry-After", fmt.Sprint(secs))
		msg := fmt.Sprintf("too many failed logins: try again in %d s", secs)
		if global {
			msg = fmt.Sprintf("too many failed logins on this appliance: try again in %d s (the CLI, `ledge admin`, still works)", secs)
		}
		s.loginFailed(c, form, http.StatusTooManyRequests, "too_many_attempts", msg)
	}
	if wait := s.limiter.locked(key, time.Now()); wait > 0 {
		tooMany(wait, false)
		return
	}
	if !s.limiter.turn(c.Request.Context()) {
		c.Header("Retry-After", "5")
		s.loginFailed(c, form, http.StatusTooManyRequests, "too_many_attempts",
			"passwords are checked one at a time and many logins are waiting: try again in 5 s")
		return
	}
	wait, global := s.limiter.begin(key, time.Now())
	if wait > 0 {
		s.limiter.done()
		tooMany(wait, global)
		return
	}
	ok, err := s.auth.checkPassword(c.Request.Context(), req.Password)
	s.limiter.done()
	if err != nil {
		s.respondErr(c, err)
		return
	}
	if !ok {
		s.log.Warn("login failed", "remote", client)
		s.loginFailed(c, form, http.StatusUnauthorized, string(fault.Unauthorized), "wrong password")
		return
	}
	s.limiter.succeeded(key)
	id, csrf, err := s.auth.newSession(c.Request.Context(), client)
	if err != nil {
		s.respondErr(c, err)
		return
	}
	s.log.Info("login", "remote", client)
	if f := s.opts.PasswordFile; f != "" {
		if err := os.Remove(f); err == nil {
			s.log.Info("first login: the first admin password's file is deleted", "file", f)
		} else if !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn("delete the first admin password's file", "file", f, "err", err)
		}
	}
	promoteConn(c.Request)
	http.SetCookie(c.Writer, &http.Cookie{
		Name: sessionCookie, Value: id, Path: "/", MaxAge: int(sessionMaxLife.Seconds()),
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: c.Request.TLS != nil,
	})
	if form {
		c.Redirect(http.StatusSeeOther, safeNext(c.Request.PostForm.Get("next")))
		return
	}
	c.JSON(http.StatusOK, gin.H{"csrfToken": csrf})
}

// safeNext returns next when it is a path on this server, and "/"
// otherwise: a browser reads "//evil.com", "/\\evil.com" and "/\t/evil.com"
// as another site.
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.ContainsRune(next, '\\') {
		return "/"
	}
	for _, r := range next {
		if r < 0x20 || r == 0x7f {
			return "/"
		}
	}
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || u.Opaque != "" || !strings.HasPrefix(u.Path, "/") {
		return "/"
	}
	return next
}

func (s *Server) loginFailed(c *gin.Context, form bool, status int, code, msg string) {
	if form {
		s.renderLogin(c, status, msg)
		return
	}
	writeError(c, status, code, msg)
}

// logout ends the browser's session.
func (s *Server) logout(c *gin.Context) {
	a := authOf(c)
	if a.kind == authSession && s.auth != nil {
		s.auth.endSession(c.Request.Context(), a.sessionID)
	}
	http.SetCookie(c.Writer, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: c.Request.TLS != nil})
	if strings.HasPrefix(c.ContentType(), "application/json") || c.GetHeader(csrfHeader) != "" {
		c.Status(http.StatusNoContent)
		return
	}
	c.Redirect(http.StatusSeeOther, "/login")
}

// whoami tells a client how it is authenticated, and a browser its CSRF token.
func (s *Server) whoami(c *gin.Context) {
	a := authOf(c)
	out := gin.H{"auth": a.kind.String()}
	if a.kind == authSession {
		out["csrfToken"] = a.csrf
	}
	c.JSON(http.StatusOK, out)
}
