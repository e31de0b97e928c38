-- Argo CD health of a Kurable Workflow (resource.customizations.health.kurable.dev_Workflow).
-- The phase and the `Succeeded` condition are written by the operator only; a status
-- written for an older generation (observedGeneration behind) is not trusted yet.
hs = {}
local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to pick the workflow up"
  return hs
end
if status.observedGeneration ~= nil and obj.metadata.generation ~= nil
    and status.observedGeneration < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. obj.metadata.generation
  return hs
end
local phase = status.phase
local message = status.message
if message == nil and status.conditions ~= nil then
  for _, condition in ipairs(status.conditions) do
    if condition.type == "Succeeded" and condition.message ~= nil and condition.message ~= "" then
      message = condition.message
    end
  end
end
if phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = message or "all steps completed"
elseif phase == "Failed" or phase == "Cancelled" or phase == "Invalid" then
  hs.status = "Degraded"
  hs.message = phase .. ": " .. (message or "see kubectl describe")
elseif phase == "Suspended" then
  hs.status = "Suspended"
  hs.message = message or "spec.suspend is true"
else
  -- Pending, Running, and any phase a newer operator may add.
  hs.status = "Progressing"
  local step = status.currentStep
  if step ~= nil then
    hs.message = phase .. " (step " .. step .. ")"
  else
    hs.message = message or phase
  end
end
return hs
