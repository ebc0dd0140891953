# vLLM with the audio decoder its transcription endpoints need (PyAV), for the chart's Whisper
# deployment: the upstream image leaves audio libraries out. Same vLLM release as the vision pods.
# Build: docker build -f deploy/docker/vllm-audio.Dockerfile -t mmgateway/vllm-audio:0.1.0 deploy/docker
FROM vllm/vllm-openai:v0.33.0
RUN pip install --no-cache-dir av==18.1.0
ENTRYPOINT ["python3", "-m", "vllm.entrypoints.openai.api_server"]
