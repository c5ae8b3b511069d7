# A regional private GKE cluster: nodes without public addresses (they leave through Cloud
# NAT), a control plane reachable only from master_authorized_networks, Workload Identity
# (pods act as their role's Google service account, never the node's), Dataplane V2 (which
# enforces deploy/k8s's NetworkPolicies), shielded nodes and a release channel.
#
# Two node pools: `general` (collector, cdc, loader: long-running, on standard VMs) and
# `pipeline` (Spot VMs for batch work: transform, quality, Airflow tasks). The pipeline pool
# is tainted cloud.google.com/gke-spot=true:NoSchedule and labelled
# shopstream.io/pool=pipeline; the batch roles in deploy/k8s tolerate that taint and ask for
# that label, nothing else lands there.

locals {
  workload_pool = "${var.project_id}.svc.id.goog"
  labels        = var.labels
}

resource "google_container_cluster" "cluster" {
  # checkov:skip=CKV_GCP_12: Dataplane V2 (datapath_provider ADVANCED_DATAPATH) enforces NetworkPolicy itself; the legacy Calico network_policy block must stay off with it.
  # checkov:skip=CKV_GCP_65: Google Groups for RBAC needs a Workspace domain (gke-security-groups@<domain>) the project may not have; set authenticator_groups_config where it does.
  # checkov:skip=CKV_GCP_66: Binary Authorization needs an attestor and policy per organisation; images come from the project's own Artifact Registry (deploy/README.md).
  project  = var.project_id
  name     = var.name
  location = var.region

  network    = var.network_id
  subnetwork = var.subnet_id

  # The default pool is removed at once: the two pools below are managed on their own.
  remove_default_node_pool = true
  initial_node_count       = 1

  deletion_protection = var.deletion_protection
  resource_labels     = local.labels

  networking_mode = "VPC_NATIVE"
  ip_allocation_policy {
    cluster_secondary_range_name  = var.pods_range_name
    services_secondary_range_name = var.services_range_name
  }

  private_cluster_config {
    enable_private_nodes    = true
    enable_private_endpoint = var.private_endpoint
    master_ipv4_cidr_block  = var.master_cidr
    master_global_access_config {
      enabled = false
    }
  }

  master_authorized_networks_config {
    dynamic "cidr_blocks" {
      for_each = var.master_authorized_networks
      content {
        cidr_block   = cidr_blocks.value.cidr_block
        display_name = cidr_blocks.value.display_name
      }
    }
  }

  master_auth {
    client_certificate_config {
      issue_client_certificate = false
    }
  }

  workload_identity_config {
    workload_pool = local.workload_pool
  }

  release_channel {
    channel = var.release_channel
  }

  datapath_provider           = "ADVANCED_DATAPATH"
  enable_shielded_nodes       = true
  enable_intranode_visibility = true
  enable_legacy_abac          = false

  logging_config {
    enable_components = ["SYSTEM_COMPONENTS", "WORKLOADS"]
  }

  monitoring_config {
    enable_components = ["SYSTEM_COMPONENTS"]
    # Application metrics go to kube-prometheus-stack in the cluster (deploy/monitoring).
    managed_prometheus {
      enabled = false
    }
  }

  addons_config {
    http_load_balancing {
      disabled = false
    }
    horizontal_pod_autoscaling {
      disabled = false
    }
  }

  maintenance_policy {
    daily_maintenance_window {
      start_time = var.maintenance_start_time
    }
  }

  # Only the default pool's first node uses this (removed at once); it gets the same
  # hardening as the managed pools so that no node ever runs with the Compute default account.
  node_config {
    service_account = var.node_service_account
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
    image_type      = "COS_CONTAINERD"
    metadata = {
      disable-legacy-endpoints = "true"
    }
    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }
    workload_metadata_config {
      mode = "GKE_METADATA"
    }
  }

  lifecycle {
    ignore_changes = [node_config, initial_node_count]
  }
}

# A private cluster's control plane reaches nodes only on 443 and 10250 unless told more:
# prometheus-adapter's APIService (6443) and admission webhooks (kube-prometheus-stack's
# operator, 8443/9443) need their ports opened from the control plane's range.
resource "google_compute_firewall" "control_plane_webhooks" {
  project   = var.project_id
  name      = "${var.name}-control-plane-webhooks"
  network   = var.network_id
  direction = "INGRESS"
  priority  = 1000

  allow {
    protocol = "tcp"
    ports    = var.webhook_ports
  }

  source_ranges = [var.master_cidr]

  log_config {
    metadata = "EXCLUDE_ALL_METADATA"
  }
}

resource "google_container_node_pool" "general" {
  project  = var.project_id
  name     = "general"
  location = var.region
  cluster  = google_container_cluster.cluster.name

  # Per zone, at creation; the autoscaler owns the count afterwards.
  initial_node_count = 1

  autoscaling {
    total_min_node_count = var.general_min_nodes
    total_max_node_count = var.general_max_nodes
  }

  management {
    auto_repair  = true
    auto_upgrade = true
  }

  upgrade_settings {
    max_surge       = 1
    max_unavailable = 0
  }

  lifecycle {
    ignore_changes = [initial_node_count]
  }

  node_config {
    machine_type    = var.general_machine_type
    disk_size_gb    = var.disk_size_gb
    disk_type       = "pd-balanced"
    image_type      = "COS_CONTAINERD"
    service_account = var.node_service_account
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
    labels = {
      "shopstream.io/pool" = "general"
    }
    resource_labels = local.labels
    metadata = {
      disable-legacy-endpoints = "true"
    }
    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }
    workload_metadata_config {
      mode = "GKE_METADATA"
    }
  }
}

resource "google_container_node_pool" "pipeline" {
  project  = var.project_id
  name     = "pipeline"
  location = var.region
  cluster  = google_container_cluster.cluster.name

  # Empty until a batch pod asks for it (scale from zero).
  initial_node_count = 0

  autoscaling {
    total_min_node_count = var.pipeline_min_nodes
    total_max_node_count = var.pipeline_max_nodes
  }

  management {
    auto_repair  = true
    auto_upgrade = true
  }

  node_config {
    machine_type    = var.pipeline_machine_type
    disk_size_gb    = var.disk_size_gb
    disk_type       = "pd-balanced"
    image_type      = "COS_CONTAINERD"
    spot            = true
    service_account = var.node_service_account
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
    labels = {
      "shopstream.io/pool" = "pipeline"
    }
    # Only pods that tolerate Spot preemption land here (deploy/k8s: the batch roles).
    taint {
      key    = "cloud.google.com/gke-spot"
      value  = "true"
      effect = "NO_SCHEDULE"
    }
    resource_labels = local.labels
    metadata = {
      disable-legacy-endpoints = "true"
    }
    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }
    workload_metadata_config {
      mode = "GKE_METADATA"
    }
  }
}
