# The agent's image is built in the deployment issue (multi-stage, non-root, BASE as a build
# argument). Until then this file only marks its place in the layout.
ARG BASE=python:3.11-slim
FROM ${BASE}
