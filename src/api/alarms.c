/* alarms.c - /alarms/ (see API.md). */
#include "routes.h"

const route_t alarm_routes[] = {
    {NULL, NULL, NULL, 0},
};
