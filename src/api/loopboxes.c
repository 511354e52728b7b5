/* loopboxes.c - /loopboxes/ (see API.md). */
#include "routes.h"

const route_t loopbox_routes[] = {
    {NULL, NULL, NULL, 0},
};
