#ifndef PRIMES_H
#define PRIMES_H
/* Counts the primes below n (sieve of Eratosthenes); *largest gets the largest one, or 0. */
long count_primes(long n, long *largest);
#endif
