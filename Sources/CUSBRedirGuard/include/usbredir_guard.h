#pragma once
#include <stdint.h>

/* A usbredir stream checker: libusbredirparser in QEMU's role (usb-guest), fed the
   bytes a usb-host peer sends QEMU, so that hostvmm refuses exactly what QEMU's
   own parser would choke on (QEMU 10 aborts on a parse error followed by more
   data: usbredir_chardev_read asserts read_buf == NULL). Nothing is sent anywhere. */
typedef struct usbredir_guard usbredir_guard;

/* `qemu_caps`: the capability words of QEMU's hello, which decide header sizes. */
usbredir_guard *usbredir_guard_new(const uint32_t *qemu_caps, int caps_words);
/* 0: every byte parsed (or waiting for the rest of a packet); -1: the stream is
   broken, `usbredir_guard_error` says how. */
int usbredir_guard_feed(usbredir_guard *guard, const uint8_t *data, int length);
const char *usbredir_guard_error(const usbredir_guard *guard);
void usbredir_guard_free(usbredir_guard *guard);
