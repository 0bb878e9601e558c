// pause: the sandbox process of every pod on the real-node tier, in place of registry.k8s.io/pause
// (which cannot be pulled here). Like Kubernetes' own: it holds the pod's namespaces, reaps the zombies
// of processes that end up as its children (it is PID 1 of the pod), and exits 0 on SIGINT or SIGTERM.
// Built with gcc -static into an image FROM scratch (test/e2e/node/pause.Dockerfile).
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void down(int signo) {
  (void)signo;
  _exit(0);
}

static void reap(int signo) {
  (void)signo;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

static void on(int signo, void (*handler)(int), int flags) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = handler;
  sa.sa_flags = flags;
  sigemptyset(&sa.sa_mask);
  if (sigaction(signo, &sa, NULL) < 0) {
    perror("sigaction");
    exit(1);
  }
}

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "-v") == 0) {
    printf("pause (mce-operator test/e2e/node/pause.c)\n");
    return 0;
  }
  if (getpid() != 1) fprintf(stderr, "pause: warning: not PID 1, zombies elsewhere are not reaped\n");
  on(SIGINT, down, 0);
  on(SIGTERM, down, 0);
  on(SIGCHLD, reap, SA_NOCLDSTOP | SA_RESTART);
  for (;;) pause();
}
