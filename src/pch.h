// Precompiled header for the tensor layer: the libtorch headers nearly every file includes.
// Listed once here so two cores parse them once per target, not once per file.
#pragma once
#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/autograd.h>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>
#include <map>
#include <memory>
