/* routes.c - the list of route tables and the matcher. */
#include "routes.h"

#include <string.h>

const route_t *const customer_tables[] = {
    me_routes,     container_routes,   distro_routes,      tag_routes,
    domain_routes, loopbox_routes,     alarm_routes,       portmapping_routes,
    custom_distro_routes, metric_routes, news_routes,       NULL,
};

const route_t *const node_tables[] = {node_routes, NULL};

const route_t *const admin_tables[] = {
    admin_customer_routes, admin_server_routes, admin_container_routes, admin_other_routes,
    admin_metrics_routes, NULL,
};

static bool pattern_matches(const char *pattern, char *const *segs, int nsegs)
{
    int i = 0;
    const char *p = pattern;
    while (*p) {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        if (i >= nsegs)
            return false;
        if (!(len == 1 && *p == '*') && (strlen(segs[i]) != len || strncmp(segs[i], p, len)))
            return false;
        i++;
        p += len;
        if (*p == '/')
            p++;
    }
    return i == nsegs;
}

const route_t *route_find(const route_t *const *tables, const char *method, char *const *segs,
                          int nsegs, bool *path_known)
{
    *path_known = false;
    for (const route_t *const *t = tables; *t; t++) {
        for (const route_t *rt = *t; rt->method; rt++) {
            if (!pattern_matches(rt->pattern, segs, nsegs))
                continue;
            *path_known = true;
            if (strcmp(rt->method, method) == 0)
                return rt;
        }
    }
    return NULL;
}
