/* herald-launcher: the runner's launcher as a program of its own.
 *
 * herald-worker links libzmq and everything libzmq links (22 libraries, ~130
 * memory mappings). A launcher forked from it carried all of that, and every
 * exec supervisor it forks paid to copy and then tear down those mappings:
 * about a third of an exec attempt's cost. Exec'd from this small binary
 * (libc only), the launcher and its supervisors and hosts are lean.
 *
 * Internal to herald-worker, which starts it with the launcher channel as fd
 * 3 and the host board (a memfd) as fd 4: `herald-launcher WORKER_RUN_DIR`.
 */
#define _GNU_SOURCE
#include "runner_int.h"

#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    struct stat st;
    if (argc != 2 || fstat(3, &st) != 0 || !S_ISSOCK(st.st_mode)) {
        fprintf(stderr, "herald-launcher: started by herald-worker, not by hand\n");
        return 2;
    }
    host_slot *board = mmap(NULL, HOST_SLOTS * sizeof(host_slot), PROT_READ | PROT_WRITE, MAP_SHARED, 4, 0);
    if (board == MAP_FAILED) {
        fprintf(stderr, "herald-launcher: host board: %m\n");
        return 1;
    }
    close(4);
    launcher_main(3, argv[1], board);
}
