# The modelswap agent: `modelswap agent MODEL --dest /models`, configured by MODELSWAP_* variables.
# BASE is a build argument so the image can be built from a locally made base where public
# images cannot be pulled (scripts/build-image.sh does that). PIP_OPTS="--no-index" with
# wheels/ filled in builds it offline.
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
ARG PIP_OPTS=""
# Which stores the image can reach besides S3 (boto3 comes with the agent): gcs, azure.
ARG EXTRAS="agent,gcs,azure,sign"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src/ src/
COPY agent/ agent/
COPY loader/ loader/
COPY wheels/ wheels/
# hadolint ignore=DL3013
RUN python3 -m venv /opt/modelswap \
    && /opt/modelswap/bin/pip install --no-cache-dir ${PIP_OPTS} --find-links /src/wheels ".[${EXTRAS}]" \
    && /opt/modelswap/bin/pip uninstall --yes pip \
    && /opt/modelswap/bin/python -m compileall -q /opt/modelswap/lib
# The compiled modules stay in the image: with PYTHONDONTWRITEBYTECODE (and a read-only root
# for uid 10001) nothing is cached at run time, so without them every start compiles modelswap,
# boto3 and botocore from source: 1.47 s instead of 0.36 s to import the CLI and the S3 store.

FROM ${BASE}
# No compilers and no pip in the final image: only the interpreter and the venv.
COPY --from=build /opt/modelswap /opt/modelswap
# The base may ship its standard library without compiled modules (some python images strip
# them); compiling is a no-op where they are there already.
RUN python3 -m compileall -q "$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')" \
    && useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin modelswap \
    && mkdir -p /models && chown 10001:10001 /models
ENV PATH=/opt/modelswap/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MODELSWAP_DEST=/models
USER 10001:10001
VOLUME ["/models"]
EXPOSE 9101
ENTRYPOINT ["modelswap"]
CMD ["agent", "--help"]
