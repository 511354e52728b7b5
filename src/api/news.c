/* news.c - /news/ (see API.md). */
#include "routes.h"

const route_t news_routes[] = {
    {NULL, NULL, NULL, 0},
};
