/* portmappings.c - /portmappings/ (see API.md). */
#include "routes.h"

const route_t portmapping_routes[] = {
    {NULL, NULL, NULL, 0},
};
