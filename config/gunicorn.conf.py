# gunicorn settings for `drawbridge serve --gunicorn-config config/gunicorn.conf.py`.
# The values below are the built-in defaults (gateway/process/server.py); change them here.

bind = "127.0.0.1:8080"
workers = 2  # processes; 2-4 per core is typical
# gthread (threads let slow upstream calls and long downloads overlap), answering
# gunicorn's own 400/414/431 errors in the OpenAI error shape instead of HTML.
worker_class = "gateway.process.worker.GatewayWorker"
threads = 8  # keep above max_inflight_per_key (config/drawbridge.toml)
timeout = 120  # a worker silent this long is restarted
graceful_timeout = 30
keepalive = 5
limit_request_line = 4094  # longer request lines get 414
limit_request_fields = 100  # more header fields get 431
limit_request_field_size = 8190  # a longer header field gets 431
# gthread reads requests in its threads: slow clients hold them. On a public address, run
# it behind the front proxy of config/nginx.conf (docs/isolation.md).
accesslog = None  # the gateway writes its own redacted JSON access log
errorlog = "-"
# gunicorn's own error (and, if enabled, access) lines are JSON with secrets redacted, like
# the gateway's; a logger_class of your own should subclass this one.
logger_class = "gateway.process.server.GunicornLogger"
control_socket_disable = True
# worker_exit defaults to gateway.process.server.flush_on_worker_exit, which writes the worker's
# batched usage events and metrics when it stops; a hook of your own should call it too.
# post_worker_init defaults to gateway.process.server.ignore_terminal_interrupt: workers leave
# Ctrl-C (SIGINT to the whole process group) to the master, which stops them with SIGQUIT.
