"""edgelm.serve: an OpenAI-compatible HTTP server over bundles, with batching across clients.

    edgelm serve ./smol-int8 ./minilm-int8 --port 8000
    from openai import OpenAI; OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="-").chat.completions.create(...)

Layers, one job each:
    app.py            Starlette routes: OpenAI request/response shapes, SSE streams
    encoder_routes.py /v1/embeddings and /v1/rerank (Cohere's and Jina's shape)
    checks.py         what every route checks first: draining, the API key, body limits, the model
    requests.py       parse and check request bodies into typed requests (every error a 4xx, OpenAI's body)
    decode_worker.py  one thread per decoder bundle: schedules requests into the runtime's open batch
    embed_worker.py   one thread per encoder bundle: gathers requests that arrive together into one batch
    worker_thread.py  what both workers share: the job queue (--max-queue), the thread, draining
    metrics.py        Prometheus counters and histograms (/metrics)
    main.py           load the bundles, run uvicorn, drain on SIGTERM

Decoding stays in the runtime (edgelm.runtime.generator.Generator.open and TextRow); the server
only decides which request runs in which slot and when. Needs the `serve` extra.
"""
