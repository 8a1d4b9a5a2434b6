package web

import (
	"fmt"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"ledge/internal/fault"
)

type loginRequest struct {
	Password string `json:"password"`
}

// login checks the admin password and starts a session: JSON at
// POST /api/v1/auth/login, or the form of the login page at POST /login.
func (s *Server) login(c *gin.Context) {
	form := !strings.HasPrefix(c.ContentType(), "application/json")
	var req loginRequest
	if form {
		req.Password = c.PostForm("password")
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
	client, now := clientAddr(c.Request), time.Now()
	if wait := s.limiter.wait(client, now); wait > 0 {
		secs := int(math.Ceil(wait.Seconds()))
		c.Header("Retry-After", fmt.Sprint(secs))
		s.loginFailed(c, form, http.StatusTooManyRequests, "too_many_attempts",
			fmt.Sprintf("too many failed logins: try again in %d s", secs))
		return
	}
	ok, err := s.auth.checkPassword(c.Request.Context(), req.Password)
	if err != nil {
		s.respondErr(c, err)
		return
	}
	s.limiter.result(client, ok, now)
	if !ok {
		s.log.Warn("login failed", "remote", client)
		s.loginFailed(c, form, http.StatusUnauthorized, string(fault.Unauthorized), "wrong password")
		return
	}
	id, csrf, err := s.auth.newSession(c.Request.Context(), client)
	if err != nil {
		s.respondErr(c, err)
		return
	}
	s.log.Info("login", "remote", client)
	http.SetCookie(c.Writer, &http.Cookie{
		Name: sessionCookie, Value: id, Path: "/", MaxAge: int(sessionMaxLife.Seconds()),
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: c.Request.TLS != nil,
	})
	if form {
		next := c.PostForm("next")
		if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") {
			next = "/"
		}
		c.Redirect(http.StatusSeeOther, next)
		return
	}
	c.JSON(http.StatusOK, gin.H{"csrfToken": csrf})
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
