"""Monoscope's product layer: database, ingest, web app, JSON API and the `monoscope` command."""
