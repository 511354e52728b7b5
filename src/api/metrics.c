/* metrics.c - /metrics/ (see API.md). */
#include "routes.h"

const route_t metric_routes[] = {
    {NULL, NULL, NULL, 0},
};
