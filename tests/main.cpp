// Catch2's main lives alone in this translation unit so the torch-heavy test
// files can be rebuilt without it.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
