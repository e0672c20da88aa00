"""The OpenAPI pages (/docs, /redoc) with every file served by the service itself.

FastAPI's own pages load Swagger UI and ReDoc from a CDN, so they are blank on a machine without
internet access (where a service like this one often runs). The same files ship in the
`fastapi_offline` package (part of the `service` extra); they are served from /docs-static, and the
pages point there. Nothing is fetched from elsewhere: no fonts, no favicon, no validator badge.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC = "/docs-static"


def assets() -> Path:
    """The folder of swagger-ui-bundle.js, swagger-ui.css, redoc.standalone.js and favicon.png."""
    import fastapi_offline

    return Path(fastapi_offline.__file__).parent / "static"


def add_offline_docs(app: FastAPI, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """Serve the OpenAPI pages of `app` (made with ``docs_url=None, redoc_url=None``) from local files."""
    app.mount(STATIC, StaticFiles(directory=assets()), name="docs-static")
    openapi_url = app.openapi_url or "/openapi.json"
    redirect_url = app.swagger_ui_oauth2_redirect_url or "/docs/oauth2-redirect"
    favicon = f"{STATIC}/favicon.png"

    @app.get(docs_url, include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        # validatorUrl: Swagger UI would otherwise ask validator.swagger.io for a badge
        return get_swagger_ui_html(openapi_url=openapi_url, title=f"{app.title} - Swagger UI",
                                   swagger_js_url=f"{STATIC}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{STATIC}/swagger-ui.css", swagger_favicon_url=favicon,
                                   oauth2_redirect_url=redirect_url,
                                   swagger_ui_parameters={**(app.swagger_ui_parameters or {}), "validatorUrl": None})

    @app.get(redirect_url, include_in_schema=False)
    def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(redoc_url, include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url=openapi_url, title=f"{app.title} - ReDoc",
                              redoc_js_url=f"{STATIC}/redoc.standalone.js", redoc_favicon_url=favicon,
                              with_google_fonts=False)
