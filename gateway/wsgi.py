"""WSGI entry point: ``gunicorn 'gateway.wsgi:app'``; settings from file and environment."""

from gateway.app import create_app

app = create_app()
