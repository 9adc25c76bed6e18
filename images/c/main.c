/* Example workload of the build helper (`wasmedge-image build images/c`): the first argument
 * picks what to do; every example language answers the same commands. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "primes.h"

static int fail(const char *msg, const char *arg) {
    fprintf(stderr, "hello-c: %s%s\n", msg, arg ? arg : "");
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        puts("Hello from C!");
        return 0;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "echo") == 0) {
        for (int i = 2; i < argc; i++) printf(i > 2 ? " %s" : "%s", argv[i]);
        putchar('\n');
    } else if (strcmp(cmd, "env") == 0 && argc == 3) {
        const char *value = getenv(argv[2]);
        if (!value) return fail("not set: ", argv[2]);
        puts(value);
    } else if (strcmp(cmd, "stdin") == 0) {
        char line[4096];
        if (!fgets(line, sizeof line, stdin)) return fail("no input", NULL);
        line[strcspn(line, "\r\n")] = 0;
        printf("got: %s\n", line);
    } else if (strcmp(cmd, "cat") == 0 && argc == 3) {
        FILE *f = fopen(argv[2], "rb");
        if (!f) return fail("cannot open ", argv[2]);
        char buf[4096];
        size_t n;
        while ((n = fread(buf, 1, sizeof buf, f)) > 0) fwrite(buf, 1, n, stdout);
        fclose(f);
    } else if (strcmp(cmd, "exit") == 0 && argc == 3) {
        return atoi(argv[2]);
    } else if (strcmp(cmd, "primes") == 0 && argc == 3) {
        long largest, n = atol(argv[2]);
        long count = count_primes(n, &largest);
        printf("%ld primes below %ld, the largest is %ld\n", count, n, largest);
    } else {
        return fail("usage: [echo WORDS...|env NAME|stdin|cat PATH|exit N|primes N]", NULL);
    }
    return 0;
}
