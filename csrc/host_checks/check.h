// What every host check shares: CHECK(cond, printf-style message…) counts a failed condition
// and prints the first 20; report(name) prints the verdict line CI looks for and gives the exit
// status.
#pragma once

#include <cstdio>

namespace host_check {

inline int failures = 0;

inline int report(const char *name) {
    std::printf("%s host check: %s (%d failures)\n", name, failures ? "FAILED" : "ok", failures);
    return failures ? 1 : 0;
}

}  // namespace host_check

#define CHECK(cond, ...)                                   \
    do {                                                   \
        if (!(cond) && host_check::failures++ < 20) {      \
            std::printf(__VA_ARGS__);                      \
            std::printf("\n");                             \
        }                                                  \
    } while (0)
