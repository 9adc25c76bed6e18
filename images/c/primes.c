#include <stdlib.h>
#include <string.h>
#include "primes.h"

long count_primes(long n, long *largest) {
    *largest = 0;
    if (n < 3) return 0;
    char *composite = calloc((size_t)n, 1);
    if (!composite) return -1;
    long count = 0;
    for (long i = 2; i < n; i++) {
        if (composite[i]) continue;
        count++;
        *largest = i;
        if (i > (n - 1) / i) continue; /* i * i would pass n (and overflow: long is 32 bits here) */
        for (long j = i * i; j < n; j += i) composite[j] = 1;
    }
    free(composite);
    return count;
}
