/*
 * The one NBD client of bench/nbd-tls.ts: libnbd, so every server meets the same GnuTLS
 * client (fio's nbd engine cannot do TLS, and a Python libnbd loop tops out near 8 k
 * requests/s at depth 16, below the servers). Reads for SECONDS with DEPTH requests in
 * flight and prints requests/s, MB/s and the number of requests.
 *
 *   nbd-load URI rand|seq BLOCK DEPTH SECONDS
 *
 * Built by bench/nbd-tls.ts with `cc -O2 nbd-load.c -lnbd` (Debian: gcc, libnbd-dev).
 */
#include <inttypes.h>
#include <libnbd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

/* xorshift64: a fixed seed gives every server the same offsets. */
static uint64_t rng = 0x9e3779b97f4a7c15ULL;
static uint64_t next_rand(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

struct slot {
  int busy;
  int64_t cookie;
};

static int on_done(void *user_data, int *error) {
  struct slot *s = user_data;
  if (*error) {
    fprintf(stderr, "nbd-load: read failed: %s\n", strerror(*error));
    exit(1);
  }
  s->busy = 0;
  return 1;
}

int main(int argc, char **argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: %s URI rand|seq BLOCK DEPTH SECONDS\n", argv[0]);
    return 2;
  }
  const char *uri = argv[1];
  int random = strcmp(argv[2], "rand") == 0;
  size_t block = strtoul(argv[3], NULL, 0);
  int depth = atoi(argv[4]);
  double seconds = atof(argv[5]);

  struct nbd_handle *h = nbd_create();
  /* The URI names the PSK file (tls-psk-file=…), as nbdinfo and nbdcopy allow. */
  if (!h || nbd_set_uri_allow_local_file(h, true) == -1 || nbd_connect_uri(h, uri) == -1) {
    fprintf(stderr, "nbd-load: %s\n", nbd_get_error());
    return 1;
  }
  int64_t size = nbd_get_size(h);
  uint64_t blocks = size / block;
  struct slot *slots = calloc(depth, sizeof *slots);
  char **bufs = calloc(depth, sizeof *bufs);
  for (int i = 0; i < depth; i++) bufs[i] = malloc(block);

  uint64_t done = 0, seq = 0;
  double t0 = now(), end = t0 + seconds;
  for (;;) {
    int stop = now() >= end;
    int busy = 0;
    for (int i = 0; i < depth; i++) {
      if (slots[i].busy) {
        busy++;
        continue;
      }
      if (slots[i].cookie) {
        done++;
        slots[i].cookie = 0;
      }
      if (stop) continue;
      uint64_t b = random ? next_rand() % blocks : seq++ % blocks;
      nbd_completion_callback cb = {.callback = on_done, .user_data = &slots[i]};
      slots[i].busy = 1;
      slots[i].cookie = nbd_aio_pread(h, bufs[i], block, b * block, cb, 0);
      if (slots[i].cookie == -1) {
        fprintf(stderr, "nbd-load: %s\n", nbd_get_error());
        return 1;
      }
      busy++;
    }
    if (stop && busy == 0) break;
    if (nbd_poll(h, -1) == -1) {
      fprintf(stderr, "nbd-load: %s\n", nbd_get_error());
      return 1;
    }
  }
  double t = now() - t0;
  printf("%.1f %.2f %" PRIu64 "\n", done / t, done * (double)block / t / 1e6, done);
  nbd_shutdown(h, 0);
  nbd_close(h);
  return 0;
}
