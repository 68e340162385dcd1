# The Redswitch image: one image for the worker, bridge, listener, scheduler and simulator (the command picks;
# by default `redswitch run` starts them all but the simulator).
FROM python:3.12-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY redswitch ./redswitch
# EXTRAS: optional parts, e.g. "[dashboard]" for the image of `redswitch dashboard` (compose builds that one so);
# the agent's own processes never import them.
ARG EXTRAS=""
RUN pip install ".${EXTRAS}" && useradd --system --no-create-home redswitch
USER redswitch

# Health: Redis answers, FreeSWITCH authenticates and says it is ready (exit 0), or says which part failed.
HEALTHCHECK --interval=30s --timeout=20s --start-period=20s CMD ["redswitch", "check"]
# By default every process in this one container (bridge, listener, worker, scheduler), their output prefixed with
# their names; compose runs one process per container instead, each with its own command.
CMD ["redswitch", "run"]
