/* custom_distros.c - /custom_distros/ (see API.md). */
#include "routes.h"

const route_t custom_distro_routes[] = {
    {NULL, NULL, NULL, 0},
};
