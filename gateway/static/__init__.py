"""The spend dashboard's page, script and styles, served by gateway/api/dashboard.py."""
