#include <libusb.h>
#include <usbredirhost.h>
#include <usbredirfilter.h>
