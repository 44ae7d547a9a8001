/* The C types of include/pocketsam.h, for the Swift implementation in Sources/PocketSAMC. */
#include "pocketsam.h"
