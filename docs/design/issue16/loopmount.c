/* Prototype (not built by the Makefile): attach an ext4 image to a free loop device with
 * LOOP_CTL_GET_FREE + LOOP_CONFIGURE (LO_FLAGS_AUTOCLEAR), mount it nosuid,nodev on DIR.
 * cc -O2 -o /tmp/research16/loopmount loopmount.c ; ./loopmount IMAGE DIR [detach]
 * With autoclear, the loop device frees itself when the last mount of it goes. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/loop.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <time.h>
#include <unistd.h>
#include <errno.h>

static double ms(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1e3 + t.tv_nsec / 1e6; }

int main(int argc, char **argv)
{
    if (argc < 3) { fprintf(stderr, "usage: IMAGE DIR\n"); return 2; }
    double t0 = ms();
    int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
    int img = open(argv[1], O_RDWR | O_CLOEXEC);
    if (ctl < 0 || img < 0) { perror("open"); return 1; }
    for (int tries = 0; tries < 8; tries++) {
        int n = ioctl(ctl, LOOP_CTL_GET_FREE);
        if (n < 0) { perror("LOOP_CTL_GET_FREE"); return 1; }
        char dev[32]; snprintf(dev, sizeof dev, "/dev/loop%d", n);
        int lfd = open(dev, O_RDWR | O_CLOEXEC);
        if (lfd < 0) { perror(dev); return 1; }
        struct loop_config cfg; memset(&cfg, 0, sizeof cfg);
        cfg.fd = img;
        cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR | LO_FLAGS_DIRECT_IO;
        snprintf((char *)cfg.info.lo_file_name, LO_NAME_SIZE, "imperium-home:%s", argv[1]);
        if (ioctl(lfd, LOOP_CONFIGURE, &cfg) < 0) {
            if (errno == EBUSY) { close(lfd); continue; }   /* raced with another attacher */
            if (errno == EINVAL) {                           /* direct I/O refused: retry buffered */
                cfg.info.lo_flags &= ~LO_FLAGS_DIRECT_IO;
                if (ioctl(lfd, LOOP_CONFIGURE, &cfg) < 0) { perror("LOOP_CONFIGURE"); return 1; }
            } else { perror("LOOP_CONFIGURE"); return 1; }
        }
        double t1 = ms();
        if (mount(dev, argv[2], "ext4", MS_NOSUID | MS_NODEV | MS_NOATIME, "errors=remount-ro") < 0) {
            perror("mount"); return 1;
        }
        /* autoclear: the device goes when the mount goes; the fds may close now */
        close(lfd); close(img); close(ctl);
        printf("%s attached in %.2f ms, mounted in %.2f ms\n", dev, t1 - t0, ms() - t1);
        return 0;
    }
    fprintf(stderr, "no free loop device\n");
    return 1;
}
