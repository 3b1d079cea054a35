"""Settings for plain gunicorn: ``gunicorn -c python:gateway.gunicorn_conf 'gateway.wsgi:app'``.

The defaults and worker hooks of ``drawbridge serve`` (gateway/process/server.py): ``worker_exit``
writes a stopping worker's usage events, metrics and log lines, ``post_worker_init`` leaves
Ctrl-C to the master. Options on gunicorn's command line still win.
"""

from gateway.process.server import DEFAULT_OPTIONS

bind = DEFAULT_OPTIONS["bind"]
workers = DEFAULT_OPTIONS["workers"]
worker_class = DEFAULT_OPTIONS["worker_class"]
threads = DEFAULT_OPTIONS["threads"]
timeout = DEFAULT_OPTIONS["timeout"]
graceful_timeout = DEFAULT_OPTIONS["graceful_timeout"]
keepalive = DEFAULT_OPTIONS["keepalive"]
limit_request_line = DEFAULT_OPTIONS["limit_request_line"]
limit_request_fields = DEFAULT_OPTIONS["limit_request_fields"]
limit_request_field_size = DEFAULT_OPTIONS["limit_request_field_size"]
logger_class = DEFAULT_OPTIONS["logger_class"]
accesslog = DEFAULT_OPTIONS["accesslog"]
errorlog = DEFAULT_OPTIONS["errorlog"]
control_socket_disable = DEFAULT_OPTIONS["control_socket_disable"]
worker_exit = DEFAULT_OPTIONS["worker_exit"]
post_worker_init = DEFAULT_OPTIONS["post_worker_init"]
