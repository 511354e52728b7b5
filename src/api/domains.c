/* domains.c - /domains/ (see API.md). */
#include "routes.h"

const route_t domain_routes[] = {
    {NULL, NULL, NULL, 0},
};
