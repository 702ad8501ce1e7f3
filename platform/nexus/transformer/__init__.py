"""The KServe custom transformer: auth, rate limits and circuit breaking in front of vLLM.

Started exactly as KServe starts a transformer container::

    python -m nexus.transformer --model_name chat --predictor_host 127.0.0.1:9000 --http_port 8080
"""
