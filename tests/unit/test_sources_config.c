/* tests/unit/test_sources_config.c: the `sources` list of the config
 * (config/sources.c, DESIGN §12): defaults, every value, and each kind of
 * error as its exact "FILE:LINE: what" line.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../config/config.h"

static char *string_fail(const char *text)
{
    char *err = NULL;
    herald_config *c = config_load_string(text, "t.cfg", NULL, &err);
    cr_assert_null(c, "loaded but should not have: %s", text);
    cr_assert_not_null(err);
    return err;
}

static herald_config *string_ok(const char *text)
{
    char *err = NULL;
    herald_config *c = config_load_string(text, "t.cfg", "/base", &err);
    cr_assert_not_null(c, "%s", err ? err : "(no error text)");
    return c;
}

#define HAS(err, want) cr_assert(strstr(err, want), "missing\n  %s\nin\n%s", want, err)

Test(sources_config, defaults)
{
    herald_config *c = string_ok("broker = { publish_endpoint = \"tcp://*:7799\"; data_dir = \"d\"; };\n"
                                 "sources = ( { name = \"photos\"; type = \"fs\"; path = \"in\"; bucket = \"photos\";"
                                 " topic = \"uploads\"; } );\n");
    cr_assert_eq(c->nsources, 1);
    const cfg_source *s = config_source(c, "photos");
    cr_assert_not_null(s);
    cr_assert_str_eq(s->type, "fs");
    cr_assert_str_eq(s->path, "/base/in");
    cr_assert_str_eq(s->bucket, "photos");
    cr_assert_str_eq(s->topic, "uploads");
    cr_assert(s->recursive);
    cr_assert_eq(s->events, SOURCE_EV_CREATED | SOURCE_EV_REMOVED);
    cr_assert_str_eq(s->prefix, "");
    cr_assert_str_eq(s->suffix, "");
    cr_assert_eq(s->nignore, 5);
    cr_assert_str_eq(s->ignore[0], ".*.swp");
    cr_assert_str_eq(s->ignore[3], "4913");
    cr_assert_eq(s->rescan_s, 300.0);
    cr_assert_str_eq(s->region, "us-east-1");
    cr_assert_str_eq(s->broker, "tcp://127.0.0.1:7799", "a wildcard bind is this machine: %s", s->broker);
    cr_assert_null(s->key);
    cr_assert_str_eq(s->state_dir, "/base/d/sources/photos");
    cr_assert_eq(s->line, 2);
    config_destroy(&c);
}

Test(sources_config, every_value)
{
    herald_config *c = string_ok(
        "topics = ( { name = \"uploads\"; } );\n"
        "sources = ( { name = \"a\"; type = \"fs\"; path = \"/srv/a\"; bucket = \"my.bucket-1\"; topic = \"uploads\";\n"
        "  recursive = false; events = [\"s3:ObjectRemoved:*\"]; prefix = \"img/\"; suffix = \".jpg\";\n"
        "  ignore = [\"*.tmp\"]; rescan = 5; region = \"eu-west-3\"; broker = \"ipc:///tmp/x.sock\";\n"
        "  key = \"k/a.key\"; broker_key = \"k/b.pub\"; state_dir = \"st\"; },\n"
        "  { name = \"b\"; type = \"fs\"; path = \"/srv/b\"; bucket = \"bbb\"; topic = \"uploads\"; ignore = []; rescan = 0.5; } );\n");
    cr_assert_eq(c->nsources, 2);
    const cfg_source *s = &c->sources[0];
    cr_assert(!s->recursive);
    cr_assert_eq(s->events, SOURCE_EV_REMOVED);
    cr_assert_str_eq(s->prefix, "img/");
    cr_assert_str_eq(s->suffix, ".jpg");
    cr_assert_eq(s->nignore, 1);
    cr_assert_str_eq(s->ignore[0], "*.tmp");
    cr_assert_eq(s->rescan_s, 5.0);
    cr_assert_str_eq(s->region, "eu-west-3");
    cr_assert_str_eq(s->broker, "ipc:///tmp/x.sock");
    cr_assert_str_eq(s->key, "/base/k/a.key");
    cr_assert_str_eq(s->broker_key, "/base/k/b.pub");
    cr_assert_str_eq(s->state_dir, "/base/st");
    cr_assert_eq(c->sources[1].nignore, 0, "ignore = [] ignores nothing");
    cr_assert_eq(c->sources[1].rescan_s, 0.5);
    config_destroy(&c);
}

Test(sources_config, every_error_at_its_line)
{
    char *err = string_fail(
        "topics = ( { name = \"uploads\"; } );\n"
        "sources = ( { name = \"a\"; type = \"pg\"; path = \"/p\"; bucket = \"Bad_Bucket\"; topic = \"nope\"; },\n"
        "  { name = \"b\"; type = \"fs\"; path = \"/p\"; bucket = \"bbb\"; topic = \"uploads\";\n"
        "    events = [\"ObjectCreated:Copy\"];\n"
        "    rescan = -1;\n"
        "    recursive = \"yes\";\n"
        "    colour = 1;\n"
        "    key = \"k\";\n"
        "    broker = \"tcp://h:99999\";\n"
        "    ignore = [1]; },\n"
        "  { type = \"fs\"; },\n"
        "  { name = \"b\"; type = \"fs\"; path = \"/p\"; bucket = \"bbb\"; topic = \"uploads\"; region = \"EU\"; },\n"
        "  5 );\n");
    HAS(err, "t.cfg:2: sources[0] (a): type: 'pg' is not a known source type (fs)");
    HAS(err, "t.cfg:2: sources[0] (a): bucket: 'Bad_Bucket' is not an S3 bucket name");
    HAS(err, "t.cfg:2: sources[0] (a): topic: unknown topic 'nope'");
    HAS(err, "t.cfg:4: sources[1] (b): events: 'ObjectCreated:Copy' is not one of");
    HAS(err, "t.cfg:5: sources[1] (b): rescan: -1 is out of range");
    HAS(err, "t.cfg:6: sources[1] (b): recursive: expected true or false, not a string");
    HAS(err, "t.cfg:7: sources[1] (b): unknown setting 'colour'");
    HAS(err, "t.cfg:8: sources[1] (b): key: is set but broker_key is not");
    HAS(err, "t.cfg:9: sources[1] (b): broker: 'tcp://h:99999'");
    HAS(err, "t.cfg:10: sources[1] (b): ignore[0]: expected a string, not an integer");
    HAS(err, "t.cfg:11: sources[2]: name is missing");
    HAS(err, "t.cfg:11: sources[2]: path is missing");
    HAS(err, "t.cfg:11: sources[2]: bucket is missing");
    HAS(err, "t.cfg:11: sources[2]: topic is missing");
    HAS(err, "t.cfg:12: sources[3] (b): region: 'EU' is not a region name");
    HAS(err, "t.cfg:12: sources[3]: name 'b' is used twice (also sources[1])");
    HAS(err, "t.cfg:13: sources[4]: expected a group");
    free(err);
    err = string_fail("sources = { name = \"a\"; };\n");
    HAS(err, "t.cfg:1: sources: expected a list");
    free(err);
}
