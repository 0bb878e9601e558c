# The real-node tier's workload: the kernel tier's static hugepage program (test/e2e/kernel/guest/hwp.c,
# see its usage line) as the entrypoint, and a static busybox so a test can run a shell in the container.
# Built by images.sh from a context holding only the compiled `hwp` and bin/ with a copy of /bin/busybox
# (busybox-static) and bin/sh, a link to it.
FROM scratch
COPY hwp /hwp
COPY bin/ /bin/
ENTRYPOINT ["/hwp"]
