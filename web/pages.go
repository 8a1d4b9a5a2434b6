package web

import (
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"
)

//go:embed ui/templates/*.html
var templateFS embed.FS

//go:embed ui/static
var staticFS embed.FS

// page is one dashboard page.
type page struct {
	Path  string
	Title string
	name  string // template file and data-page value
}

// navPage is a page in the navigation bar.
type navPage struct {
	Path, Title string
	Current     bool
}

// pageData is what every page template gets.
type pageData struct {
	Title, Page, Device, Version, CSRF, AssetVersion string
	LoggedIn                                         bool
	// Hub and Upstream say whether the MQTT hub runs and whether there is
	// an upstream link: pages do not ask the API for what is not there.
	Hub, Upstream bool
	Nav           []navPage
	Data          any
}

// templates are parsed once: the layout plus each page's content.
type templates struct {
	pages    map[string]*template.Template
	login    *template.Template
	notFound *template.Template
}

func parseTemplates(pages []page) (*templates, error) {
	t := &templates{pages: map[string]*template.Template{}}
	var err error
	if t.login, err = template.ParseFS(templateFS, "ui/templates/login.html"); err != nil {
		return nil, err
	}
	if t.notFound, err = template.ParseFS(templateFS, "ui/templates/notfound.html"); err != nil {
		return nil, err
	}
	for _, p := range pages {
		tp, err := template.ParseFS(templateFS, "ui/templates/layout.html", "ui/templates/"+p.name+".html")
		if err != nil {
			return nil, fmt.Errorf("template %s: %w", p.name, err)
		}
		t.pages[p.name] = tp
	}
	return t, nil
}

// dashboardPages lists the pages in navigation order; a page appears when
// the component behind it is there.
func (s *Server) dashboardPages() []page {
	return []page{
		{Path: "/", Title: "Overview", name: "overview"},
		{Path: "/live", Title: "Live", name: "live"},
		{Path: "/events", Title: "Events", name: "events"},
		{Path: "/pipelines", Title: "Pipelines", name: "pipelines"},
		{Path: "/modules", Title: "Modules", name: "modules"},
		{Path: "/devices", Title: "Devices", name: "devices"},
		{Path: "/deployments", Title: "Deployments", name: "deployments"},
		{Path: "/models", Title: "Models", name: "models"},
		{Path: "/hub", Title: "Hub", name: "hub"},
	}
}

// pageRoutes serves the dashboard, the login page and the static files.
func (s *Server) pageRoutes() error {
	pages := s.dashboardPages()
	tpl, err := parseTemplates(pages)
	if err != nil {
		return err
	}
	s.tpl = tpl
	static, err := fs.Sub(staticFS, "ui/static")
	if err != nil {
		return err
	}
	s.engine.GET("/static/*file", func(c *gin.Context) {
		c.Header("Cache-Control", "public, max-age=3600")
		c.FileFromFS(c.Param("file"), http.FS(static))
	})
	// Browsers ask for /favicon.ico whatever the page links.
	s.engine.GET("/favicon.ico", func(c *gin.Context) {
		c.Header("Cache-Control", "public, max-age=86400")
		c.FileFromFS("favicon.svg", http.FS(static))
	})
	s.engine.GET("/login", func(c *gin.Context) { s.renderLogin(c, http.StatusOK, "") })
	s.engine.POST("/login", s.login)
	s.engine.POST("/logout", s.requireAuth, s.logout)
	for _, p := range pages {
		s.engine.GET(p.Path, s.requirePage, func(c *gin.Context) { s.renderPage(c, pages, p, nil) })
	}
	return nil
}

// pageCSP is the Content-Security-Policy of the dashboard's pages and the
// login page: nothing but this appliance's own files.
const pageCSP = "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"

func (s *Server) renderPage(c *gin.Context, pages []page, p page, data any) {
	a := authOf(c)
	d := pageData{
		Title: p.Title, Page: p.name, Device: s.opts.DeviceID, Version: s.opts.Version,
		CSRF: a.csrf, AssetVersion: s.opts.Version, LoggedIn: a.kind == authSession, Data: data,
		Hub: s.opts.HubStatus != nil, Upstream: s.opts.Upstream != nil,
	}
	for _, q := range pages {
		d.Nav = append(d.Nav, navPage{Path: q.Path, Title: q.Title, Current: q.Path == p.Path})
	}
	c.Header("Content-Type", "text/html; charset=utf-8")
	c.Header("X-Frame-Options", "DENY")
	c.Header("Content-Security-Policy", pageCSP)
	c.Status(http.StatusOK)
	if err := s.tpl.pages[p.name].ExecuteTemplate(c.Writer, "layout", d); err != nil {
		s.log.Error("render page", "page", p.name, "err", err)
	}
}

// notFound answers an address nothing serves: a page for a browser that
// asks for one outside the API (a mistyped address, GET /logout from a
// bookmark), the JSON error for everyone else.
func (s *Server) notFound(c *gin.Context) {
	r := c.Request
	if (r.Method == http.MethodGet || r.Method == http.MethodHead) && !strings.HasPrefix(r.URL.Path, "/api/") &&
		strings.Contains(r.Header.Get("Accept"), "text/html") && s.tpl != nil {
		c.Header("Content-Type", "text/html; charset=utf-8")
		c.Header("X-Frame-Options", "DENY")
		c.Header("Content-Security-Policy", pageCSP)
		c.Status(http.StatusNotFound)
		s.tpl.notFound.ExecuteTemplate(c.Writer, "notfound", map[string]any{
			"Device": s.opts.DeviceID, "Path": r.URL.Path, "AssetVersion": s.opts.Version,
		})
		return
	}
	writeError(c, http.StatusNotFound, "not_found", fmt.Sprintf("no route %s %s", r.Method, r.URL.Path))
}

func (s *Server) renderLogin(c *gin.Context, status int, msg string) {
	next := c.Query("next")
	if next == "" {
		next = c.PostForm("next")
	}
	c.Header("Content-Type", "text/html; charset=utf-8")
	c.Header("X-Frame-Options", "DENY")
	c.Header("Content-Security-Policy", pageCSP)
	c.Header("Cache-Control", "no-store")
	c.Status(status)
	s.tpl.login.ExecuteTemplate(c.Writer, "login", map[string]any{
		"Device": s.opts.DeviceID, "Error": msg, "Next": next, "AssetVersion": s.opts.Version,
	})
}
