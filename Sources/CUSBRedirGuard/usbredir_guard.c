#include "usbredir_guard.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <usbredirparser.h>
#include <usbredirfilter.h>

struct usbredir_guard {
    struct usbredirparser *parser;
    const uint8_t *input;
    int input_left;
    char error[256];
};

static int guard_read(void *priv, uint8_t *data, int count) {
    struct usbredir_guard *g = priv;
    int n = count < g->input_left ? count : g->input_left;
    memcpy(data, g->input, (size_t)n);
    g->input += n;
    g->input_left -= n;
    return n;
}

/* What the parser would answer (device_disconnect_ack) goes nowhere. */
static int guard_write(void *priv, uint8_t *data, int count) {
    (void)priv; (void)data;
    return count;
}

static void guard_log(void *priv, int level, const char *msg) {
    struct usbredir_guard *g = priv;
    if (level <= usbredirparser_error && g->error[0] == 0)
        snprintf(g->error, sizeof g->error, "%s", msg);
}

static void guard_free_data(void *priv, uint8_t *data) {
    struct usbredir_guard *g = priv;
    usbredirparser_free_packet_data(g->parser, data);
}

/* Every packet callback must exist (the parser calls them unchecked); none acts. */
static void on_void(void *priv) { (void)priv; }
static void on_id(void *priv, uint64_t id) { (void)priv; (void)id; }
static void on_hello(void *priv, struct usb_redir_hello_header *h) { (void)priv; (void)h; }
static void on_connect(void *priv, struct usb_redir_device_connect_header *h) { (void)priv; (void)h; }
static void on_iface(void *priv, struct usb_redir_interface_info_header *h) { (void)priv; (void)h; }
static void on_ep(void *priv, struct usb_redir_ep_info_header *h) { (void)priv; (void)h; }
#define ON_HEADER(name, type) \
    static void name(void *priv, uint64_t id, struct type *h) { (void)priv; (void)id; (void)h; }
ON_HEADER(on_set_config, usb_redir_set_configuration_header)
ON_HEADER(on_config_status, usb_redir_configuration_status_header)
ON_HEADER(on_set_alt, usb_redir_set_alt_setting_header)
ON_HEADER(on_get_alt, usb_redir_get_alt_setting_header)
ON_HEADER(on_alt_status, usb_redir_alt_setting_status_header)
ON_HEADER(on_start_iso, usb_redir_start_iso_stream_header)
ON_HEADER(on_stop_iso, usb_redir_stop_iso_stream_header)
ON_HEADER(on_iso_status, usb_redir_iso_stream_status_header)
ON_HEADER(on_start_intr, usb_redir_start_interrupt_receiving_header)
ON_HEADER(on_stop_intr, usb_redir_stop_interrupt_receiving_header)
ON_HEADER(on_intr_status, usb_redir_interrupt_receiving_status_header)
ON_HEADER(on_alloc_streams, usb_redir_alloc_bulk_streams_header)
ON_HEADER(on_free_streams, usb_redir_free_bulk_streams_header)
ON_HEADER(on_streams_status, usb_redir_bulk_streams_status_header)
ON_HEADER(on_start_bulk_recv, usb_redir_start_bulk_receiving_header)
ON_HEADER(on_stop_bulk_recv, usb_redir_stop_bulk_receiving_header)
ON_HEADER(on_bulk_recv_status, usb_redir_bulk_receiving_status_header)
static void on_filter(void *priv, struct usbredirfilter_rule *rules, int count) {
    (void)count;
    usbredirfilter_free(rules); /* the parser hands them over */
    (void)priv;
}
#define ON_DATA(name, type) \
    static void name(void *priv, uint64_t id, struct type *h, uint8_t *data, int len) { \
        (void)id; (void)h; (void)len; guard_free_data(priv, data); }
ON_DATA(on_control, usb_redir_control_packet_header)
ON_DATA(on_bulk, usb_redir_bulk_packet_header)
ON_DATA(on_iso, usb_redir_iso_packet_header)
ON_DATA(on_interrupt, usb_redir_interrupt_packet_header)
ON_DATA(on_buffered_bulk, usb_redir_buffered_bulk_packet_header)

usbredir_guard *usbredir_guard_new(const uint32_t *qemu_caps, int caps_words) {
    struct usbredir_guard *g = calloc(1, sizeof *g);
    if (!g) return NULL;
    struct usbredirparser *p = usbredirparser_create();
    if (!p) { free(g); return NULL; }
    g->parser = p;
    p->priv = g;
    p->log_func = guard_log;
    p->read_func = guard_read;
    p->write_func = guard_write;
    p->hello_func = on_hello;
    p->device_connect_func = on_connect;
    p->device_disconnect_func = on_void;
    p->reset_func = on_void;
    p->interface_info_func = on_iface;
    p->ep_info_func = on_ep;
    p->set_configuration_func = on_set_config;
    p->get_configuration_func = on_id;
    p->configuration_status_func = on_config_status;
    p->set_alt_setting_func = on_set_alt;
    p->get_alt_setting_func = on_get_alt;
    p->alt_setting_status_func = on_alt_status;
    p->start_iso_stream_func = on_start_iso;
    p->stop_iso_stream_func = on_stop_iso;
    p->iso_stream_status_func = on_iso_status;
    p->start_interrupt_receiving_func = on_start_intr;
    p->stop_interrupt_receiving_func = on_stop_intr;
    p->interrupt_receiving_status_func = on_intr_status;
    p->alloc_bulk_streams_func = on_alloc_streams;
    p->free_bulk_streams_func = on_free_streams;
    p->bulk_streams_status_func = on_streams_status;
    p->cancel_data_packet_func = on_id;
    p->filter_reject_func = on_void;
    p->filter_filter_func = on_filter;
    p->device_disconnect_ack_func = on_void;
    p->start_bulk_receiving_func = on_start_bulk_recv;
    p->stop_bulk_receiving_func = on_stop_bulk_recv;
    p->bulk_receiving_status_func = on_bulk_recv_status;
    p->control_packet_func = on_control;
    p->bulk_packet_func = on_bulk;
    p->iso_packet_func = on_iso;
    p->interrupt_packet_func = on_interrupt;
    p->buffered_bulk_packet_func = on_buffered_bulk;
    uint32_t caps[USB_REDIR_CAPS_SIZE] = {0};
    for (int i = 0; i < caps_words && i < USB_REDIR_CAPS_SIZE; i++) caps[i] = qemu_caps[i];
    usbredirparser_init(p, "hostvmm guard", caps, USB_REDIR_CAPS_SIZE, usbredirparser_fl_no_hello);
    return g;
}

int usbredir_guard_feed(usbredir_guard *g, const uint8_t *data, int length) {
    if (g->error[0]) return -1;
    g->input = data;
    g->input_left = length;
    int r = usbredirparser_do_read(g->parser);
    while (usbredirparser_has_data_to_write(g->parser)) {
        if (usbredirparser_do_write(g->parser) < 0) break;
    }
    if (r < 0 || g->input_left > 0) {
        if (!g->error[0]) snprintf(g->error, sizeof g->error, "usbredir parse error %d", r);
        return -1;
    }
    return 0;
}

const char *usbredir_guard_error(const usbredir_guard *g) { return g->error; }

void usbredir_guard_free(usbredir_guard *g) {
    if (!g) return;
    usbredirparser_destroy(g->parser);
    free(g);
}
