"""The CLI's exit statuses beyond click's own (0 done, 1 refused, 2 usage)."""

EXIT_REFUSED = 1
EXIT_NOT_ALLOWED = 3  # the server refused the token or its role (401, 403)
EXIT_UNREACHABLE = 4  # the server is out of reach or failing (5xx)
