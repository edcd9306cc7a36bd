"""`blinkgen serve`: an OpenAI-compatible images API with jobs, progress, dynamic batching,
limits and a web page.

Endpoints: POST /v1/images/generations (OpenAI shape; extras seed/steps/guidance/sampler),
GET /v1/models, POST /v1/jobs -> 202, GET|DELETE /v1/jobs/{id}, GET /v1/jobs/{id}/events (SSE),
GET /images/{token}.png (response_format=url), /health, /ready, /metrics, and the page at /.
Layout: app.py (routes, errors), batcher.py (the worker thread), jobs.py (state), schemas.py
(request/response shapes), limits.py (keys, body cap), metrics.py (Prometheus text),
commands.py (the CLI), static/ (the page, plain HTML/JS/CSS).
"""
