# Sourced by the tiers' prepare scripts. module_order MODULES_DIR NAME...: prints the relative paths of
# the named modules and of everything they depend on, dependencies first, each once. Built-in ones
# (modules.builtin) need nothing; a module the kernel has in neither form is an error.
module_order() {
  local modules=$1
  shift
  local -A seen=()
  local -a order=()
  add_module() {
    local name=${1//-/_} line path dep
    [ -n "${seen[$name]:-}" ] && return 0
    seen[$name]=1
    line=$(grep -E "(^|/)${name//_/[-_]}\.ko(\.[a-z]+)?:" "$modules/modules.dep" || true)
    if [ -z "$line" ]; then
      grep -qE "(^|/)${name//_/[-_]}\.ko\$" "$modules/modules.builtin" || { echo "$modules: no module or built-in $1" >&2; return 1; }
      return 0
    fi
    path=${line%%:*}
    for dep in ${line#*:}; do add_module "$(basename "${dep%%.ko*}")" || return 1; done
    order+=("$path")
  }
  local m
  for m in "$@"; do add_module "$m" || return 1; done
  printf '%s\n' "${order[@]}"
}
