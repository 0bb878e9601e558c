// hwp: the kernel tier's workload. Maps hugepages (private anonymous, or a shared hugetlbfs file),
// faults them in with a known pattern, and logs what happens to it, one line per fact, to a file the
// host reads: its pages' pfns, every SIGBUS (si_code, si_addr, si_addr_lsb), SIGUSR1 and SIGTERM with the time
// it arrived. Then it obeys one-word commands from a FIFO: touch, pread, madvise, check, pfns, munmap,
// keep1g, exit. Built with gcc -static: the guest has no libc.
//
// usage: hwp -l LOG -c FIFO -s 2M|1G [-n PAGES] [-f HUGETLBFS_FILE] [-k default|early|late]
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#ifndef MAP_HUGE_SHIFT
#define MAP_HUGE_SHIFT 26
#endif
#ifndef MADV_SOFT_OFFLINE
#define MADV_SOFT_OFFLINE 101
#endif

static int log_fd = -1;
static char *base;
static size_t page_bytes;
static size_t pages = 1;
static char *gone; // gone[i]: hugepage i was unmapped by keep1g
static int file_fd = -1;
// Set while an access or a madvise may take BUS_MCEERR_AR: the handler jumps back instead of exiting.
static sigjmp_buf touch_jump;
static volatile sig_atomic_t touching;

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

// Used outside signal handlers only: vsnprintf is not async-signal-safe.
static void logf_(const char *fmt, ...) {
  char line[1024];
  int n = snprintf(line, sizeof line, "t=%lld ", now_ms());
  va_list ap;
  va_start(ap, fmt);
  n += vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
  va_end(ap);
  if (n > (int)sizeof line - 2) n = (int)sizeof line - 2;
  line[n++] = '\n';
  if (write(log_fd, line, (size_t)n) < 0) _exit(3);
}

// Async-signal-safe number formatting for the handlers.
static char *put_str(char *p, const char *s) {
  while (*s) *p++ = *s++;
  return p;
}
static char *put_num(char *p, unsigned long long v, int hex) {
  char tmp[24];
  int i = 0;
  do {
    unsigned d = (unsigned)(v % (hex ? 16 : 10));
    tmp[i++] = (char)(d < 10 ? '0' + d : 'a' + d - 10);
    v /= hex ? 16 : 10;
  } while (v);
  if (hex) p = put_str(p, "0x");
  while (i) *p++ = tmp[--i];
  return p;
}

static void on_signal(int sig, siginfo_t *info, void *context) {
  (void)context;
  int saved = errno;
  char line[256], *p = line;
  p = put_str(p, "t=");
  p = put_num(p, (unsigned long long)now_ms(), 0);
  if (sig == SIGBUS) {
    p = put_str(p, " sigbus code=");
    p = put_num(p, (unsigned long long)info->si_code, 0);
    p = put_str(p, " addr=");
    p = put_num(p, (unsigned long long)(uintptr_t)info->si_addr, 1);
    p = put_str(p, " lsb=");
    p = put_num(p, (unsigned long long)info->si_addr_lsb, 0);
  } else {
    p = put_str(p, sig == SIGTERM ? " sigterm" : " sigusr1");
  }
  *p++ = '\n';
  if (write(log_fd, line, (size_t)(p - line)) < 0) _exit(3);
  errno = saved;
  // The kubelet's stop (an eviction): logged, so a test can tell it from a crash.
  if (sig == SIGTERM) _exit(0);
  // BUS_MCEERR_AR re-faults if we return: leave the access instead.
  if (sig == SIGBUS && info->si_code == BUS_MCEERR_AR) {
    if (touching) siglongjmp(touch_jump, 1);
    _exit(7);
  }
}

// The pfn behind a virtual address, from /proc/self/pagemap (bit 63 present, bits 0-54 pfn); 0 if none.
static unsigned long long pfn_of(const void *address) {
  int fd = open("/proc/self/pagemap", O_RDONLY);
  if (fd < 0) return 0;
  uint64_t entry = 0;
  off_t at = (off_t)((uintptr_t)address / 4096) * 8;
  ssize_t n = pread(fd, &entry, sizeof entry, at);
  close(fd);
  if (n != sizeof entry || !(entry >> 63)) return 0;
  return entry & ((1ULL << 55) - 1);
}

static void log_pfns(const char *what) {
  char list[512];
  size_t n = 0;
  list[0] = 0;
  for (size_t i = 0; i < pages && n < sizeof list - 24; i++)
    n += (size_t)snprintf(list + n, sizeof list - n, "%s0x%llx", i ? "," : "", pfn_of(base + i * page_bytes));
  logf_("%s pfns=%s", what, list);
}

// Page i holds byte i+1 at the start of every 4 KiB subpage: enough to tell the data survived a move.
static void fill(void) {
  for (size_t i = 0; i < pages; i++)
    for (size_t off = 0; off < page_bytes; off += 4096) base[i * page_bytes + off] = (char)(i + 1);
}

static void check(void) {
  size_t bad = 0;
  for (size_t i = 0; i < pages; i++)
    for (size_t off = 0; off < page_bytes && !gone[i]; off += 4096)
      if (base[i * page_bytes + off] != (char)(i + 1)) bad++;
  logf_("check bad=%zu", bad);
}

// Unmaps every hugepage but the first one in each 1 GiB-aligned physical range: freed back to the pool,
// they can go to the buddy allocator, while each range keeps one hugetlb page in use. Logs the kept pfns.
static void keep1g(void) {
  unsigned long long kept[64];
  size_t nkept = 0, unmapped = 0;
  for (size_t i = 0; i < pages; i++) {
    if (gone[i]) continue;
    unsigned long long pfn = pfn_of(base + i * page_bytes);
    size_t k = 0;
    while (k < nkept && kept[k] >> 18 != pfn >> 18) k++;
    if (pfn != 0 && k == nkept && nkept < sizeof kept / sizeof kept[0]) {
      kept[nkept++] = pfn;
      continue;
    }
    if (munmap(base + i * page_bytes, page_bytes) == 0) {
      gone[i] = 1;
      unmapped++;
    }
  }
  char list[64 * 20];
  size_t n = 0;
  list[0] = 0;
  for (size_t k = 0; k < nkept; k++) n += (size_t)snprintf(list + n, sizeof list - n, "%s0x%llx", k ? "," : "", kept[k]);
  logf_("keep1g unmapped=%zu kept=%s", unmapped, list);
}

static void touch(unsigned long off) {
  touching = 1;
  if (sigsetjmp(touch_jump, 1) == 0) {
    volatile char value = base[off];
    touching = 0;
    logf_("touch off=0x%lx ok value=%d", off, (int)value);
  } else {
    touching = 0;
    logf_("touch off=0x%lx faulted", off);
  }
}

static void command(char *line) {
  char verb[32] = "", arg[32] = "";
  unsigned long off = 0;
  if (sscanf(line, "%31s %31s %lx", verb, arg, &off) < 1) return;
  if (strcmp(verb, "touch") == 0) {
    touch(strtoul(arg, NULL, 16));
  } else if (strcmp(verb, "pread") == 0) {
    char byte;
    off = strtoul(arg, NULL, 16);
    ssize_t n = pread(file_fd, &byte, 1, (off_t)off);
    logf_("pread off=0x%lx rc=%zd errno=%s", off, n, n < 0 ? strerrorname_np(errno) : "0");
  } else if (strcmp(verb, "madvise") == 0) {
    int advice = strcmp(arg, "hwpoison") == 0 ? MADV_HWPOISON : MADV_SOFT_OFFLINE;
    // Some kernels signal the caller BUS_MCEERR_AR inside madvise(MADV_HWPOISON) (6.12 on a 1 GiB page):
    // an observation, logged, not a crash.
    touching = 1;
    if (sigsetjmp(touch_jump, 1) == 0) {
      // madvise wants a 4 KiB-aligned address: the subpage holding the offset.
      int rc = madvise(base + (off & ~4095UL), 4096, advice);
      touching = 0;
      logf_("madvise %s off=0x%lx rc=%d errno=%s", arg, off, rc, rc < 0 ? strerrorname_np(errno) : "0");
    } else {
      touching = 0;
      logf_("madvise %s off=0x%lx sigbus", arg, off);
    }
  } else if (strcmp(verb, "check") == 0) {
    check();
  } else if (strcmp(verb, "pfns") == 0) {
    log_pfns("now");
  } else if (strcmp(verb, "munmap") == 0) {
    int rc = munmap(base, pages * page_bytes);
    logf_("munmap rc=%d", rc);
  } else if (strcmp(verb, "keep1g") == 0) {
    keep1g();
  } else if (strcmp(verb, "exit") == 0) {
    logf_("exit");
    exit(0);
  } else {
    logf_("unknown command %s", verb);
  }
}

int main(int argc, char **argv) {
  const char *log_path = NULL, *fifo = NULL, *file = NULL, *kill_policy = "default";
  int huge_shift = 21;
  for (int opt; (opt = getopt(argc, argv, "l:c:s:n:f:k:")) != -1;) {
    switch (opt) {
      case 'l': log_path = optarg; break;
      case 'c': fifo = optarg; break;
      case 's': huge_shift = strcmp(optarg, "1G") == 0 ? 30 : 21; break;
      case 'n': pages = strtoul(optarg, NULL, 10); break;
      case 'f': file = optarg; break;
      case 'k': kill_policy = optarg; break;
      default: return 2;
    }
  }
  if (!log_path || !fifo || pages == 0) return 2;
  log_fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (log_fd < 0) return 3;
  page_bytes = (size_t)1 << huge_shift;
  gone = calloc(pages, 1);
  if (gone == NULL) return 2;

  // PR_MCE_KILL_SET: early (1) or late (0) for this process; default follows vm.memory_failure_early_kill.
  if (strcmp(kill_policy, "default") != 0 && prctl(PR_MCE_KILL, PR_MCE_KILL_SET, strcmp(kill_policy, "early") == 0 ? PR_MCE_KILL_EARLY : PR_MCE_KILL_LATE, 0, 0) != 0) {
    logf_("prctl failed errno=%s", strerrorname_np(errno));
    return 4;
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_signal;
  sa.sa_flags = SA_SIGINFO | SA_RESTART;
  sigaction(SIGBUS, &sa, NULL);
  sigaction(SIGUSR1, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);

  size_t bytes = pages * page_bytes;
  if (file) {
    file_fd = open(file, O_RDWR | O_CREAT, 0644);
    if (file_fd < 0 || ftruncate(file_fd, (off_t)bytes) != 0) {
      logf_("open %s failed errno=%s", file, strerrorname_np(errno));
      return 5;
    }
    base = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, file_fd, 0);
  } else {
    base = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | (huge_shift << MAP_HUGE_SHIFT), -1, 0);
  }
  if (base == MAP_FAILED) {
    logf_("mmap failed errno=%s", strerrorname_np(errno));
    return 6;
  }
  fill();
  logf_("ready pid=%d base=%p page=%zu pages=%zu kill=%s mce_kill=%d", getpid(), (void *)base, page_bytes, pages, kill_policy, prctl(PR_MCE_KILL_GET, 0, 0, 0, 0));
  log_pfns("mapped");

  // O_RDWR keeps a writer open, so read() blocks between commands instead of seeing EOF.
  int ctl = open(fifo, O_RDWR);
  if (ctl < 0) return 8;
  char buffer[256];
  size_t have = 0;
  for (;;) {
    ssize_t n = read(ctl, buffer + have, sizeof buffer - have - 1);
    if (n <= 0) continue;
    have += (size_t)n;
    buffer[have] = 0;
    char *start = buffer, *newline;
    while ((newline = strchr(start, '\n')) != NULL) {
      *newline = 0;
      command(start);
      start = newline + 1;
    }
    have = (size_t)(buffer + have - start);
    memmove(buffer, start, have);
  }
}
