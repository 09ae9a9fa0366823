#include <crypt.h>
#include <shadow.h>
