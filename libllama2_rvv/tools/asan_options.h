/* Included once by each tool's main file. AddressSanitizer builds: a failed allocation returns
 * NULL, as in every other build, so it is reported as an error ("out of memory ...") instead
 * of aborting the process. */
#ifndef L2_TOOLS_ASAN_OPTIONS_H
#define L2_TOOLS_ASAN_OPTIONS_H

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define L2_ASAN_BUILD 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) && !defined(L2_ASAN_BUILD)
#define L2_ASAN_BUILD 1
#endif
#ifdef L2_ASAN_BUILD
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "allocator_may_return_null=1"; }
#endif

#endif
