# registry.k8s.io/pause:3.10 for the real-node tier, built locally (nothing can be pulled): the static
# test/e2e/node/pause.c, run as Kubernetes' own pause image runs it. Built by images.sh from a context
# holding only the compiled `pause`.
FROM scratch
COPY pause /pause
USER 65535:65535
ENTRYPOINT ["/pause"]
