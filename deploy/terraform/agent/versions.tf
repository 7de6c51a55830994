terraform {
  # Output preconditions need 1.2; optional() object attributes 1.3.
  required_version = ">= 1.3"
}
